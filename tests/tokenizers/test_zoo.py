"""Table 1 of the diffusability study (spec metrics-diffusability.md §11.4)."""

from __future__ import annotations

import pytest

from latentbench.tokenizers import build_tokenizer
from latentbench.tokenizers.regularizers import parse_variant
from latentbench.config import check_config
from latentbench.tokenizers.zoo import TABLE1, cluster_counts, entry, family_counts, tokenizer_config


def test_row_and_family_counts():
    assert len(TABLE1) == 86
    assert [r.id for r in TABLE1] == list(range(1, 87))
    assert family_counts() == {"conv-f16d32": 43, "conv-f16d64": 22, "trans-f16d32": 21}
    assert [r.id for r in TABLE1 if r.family == "conv-f16d64"] == list(range(44, 66))


def test_cluster_counts():
    # counted by hand from the table in the spec
    assert cluster_counts() == {"baseline": 3, "repa": 14, "mcos+mdms": 23, "mcos": 14, "mdms": 14,
                                "eq": 3, "lcr": 8, "lmr": 5, "mae": 2}  # fmt: skip
    assert cluster_counts("conv-f16d32") == {"baseline": 1, "repa": 6, "mcos+mdms": 15, "mcos": 6, "mdms": 6,
                                             "eq": 2, "lcr": 4, "lmr": 3}  # fmt: skip
    assert cluster_counts("conv-f16d64") == {"baseline": 1, "repa": 4, "mcos+mdms": 4, "mcos": 4, "mdms": 4,
                                             "eq": 1, "lcr": 2, "lmr": 2}  # fmt: skip
    assert cluster_counts("trans-f16d32") == {"baseline": 1, "repa": 4, "mcos+mdms": 4, "mcos": 4, "mdms": 4,
                                              "lcr": 2, "mae": 2}  # fmt: skip


def test_specific_rows_and_names():
    assert (entry(12).cluster, entry(12).variant, entry(12).family) == ("mcos+mdms", "DINOv2-B", "conv-f16d32")
    assert (entry(36).cluster, entry(36).variant) == ("eq", "flip")
    assert (entry(86).cluster, entry(86).variant, entry(86).arch) == ("mae", "r0.7", "Trans")
    assert entry(1).name == "t001-conv-f16d32-baseline"
    assert len({r.name for r in TABLE1}) == 86
    with pytest.raises(ValueError, match="87"):
        entry(87)


def test_every_variant_parses_and_rows_build_on_meta():
    import torch

    for row in TABLE1:
        parse_variant(row.cluster, row.variant)
    cfg = tokenizer_config(44)
    assert cfg["family"] == "conv_kl" and cfg["arch"] == "f16d64" and cfg["kl_weight"] == 1e-6
    with torch.device("meta"):
        tok = build_tokenizer(cfg)
    assert tok.latent_shape == (64, 16, 16)
    trans = tokenizer_config(entry(70))
    assert trans["family"] == "trans_kl" and trans["study_family"] == "trans-f16d32"
    with torch.device("meta"):
        assert build_tokenizer(trans).latent_shape == (32, 16, 16)  # ViT-B/16 pair, models.md §3.2
    config = {"study": "zoo", "data": {"kind": "synthetic"}, "backbones": {"b": {"size": "B", "recipe": "study_sit"}},
              "tokenizers": {row.name: tokenizer_config(row) for row in TABLE1}}
    check_config(config)  # every row is a valid study config entry
