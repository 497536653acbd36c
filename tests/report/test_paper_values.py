"""The papers' transcribed tables (report/paper/*.csv, spec metrics-ifid-seesaw.md Appendix A)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from latentbench.report.paper_values import (
    PAPER_DIR,
    PAPER_TABLES,
    load_paper_table,
    paper_value,
)

SPEC = Path(__file__).resolve().parents[3] / "shared" / "spec" / "metrics-ifid-seesaw.md"  # ../shared beside the checkout
SECTION_OF = {"A.1": "ifid_table1", "A.2": "ifid_table2", "A.3": "ifid_table3", "A.4": "ifid_table4",
              "A.5": "ifid_table5", "A.6": "ifid_readme_values", "A.7": "seesaw_table2", "A.8": "seesaw_table3",
              "A.9": "seesaw_table4", "A.10": "seesaw_table5"}
# (rows, columns) counted by hand from the spec's CSV blocks.
SHAPES = {"ifid_table1": (2, 8), "ifid_table2": (13, 6), "ifid_table3": (10, 9), "ifid_table4": (6, 7),
          "ifid_table5": (6, 7), "ifid_readme_values": (14, 6), "seesaw_table2": (6, 16), "seesaw_table3": (2, 8),
          "seesaw_table4": (7, 2), "seesaw_table5": (33, 15), "seesaw_table1": (8, 8),
          "diffusability_headline": (4, 6)}


def test_every_table_has_the_spec_shape() -> None:
    assert set(PAPER_TABLES) == set(SHAPES)
    for name, shape in SHAPES.items():
        assert load_paper_table(name).shape == shape, name
        if name not in ("seesaw_table1", "diffusability_headline"):  # from paper text / spec §13, not Appendix A
            assert SECTION_OF[PAPER_TABLES[name].spec_section] == name


def test_ifid_table3_ifid_row_and_signs() -> None:
    t3 = load_paper_table("ifid_table3").set_index("metric")
    assert t3.loc["iFID"].tolist() == [0.85, 0.86, 0.82, 0.84, 0.89, 0.91, 0.88, 0.92]
    assert t3.loc["-PSNR"].tolist() == [-0.81, -0.81, -0.83, -0.82, -0.79, -0.78, -0.79, -0.85]
    assert t3.loc["rFID", "SiTXL_nocfg_PCC"] == -0.06 and t3.loc["GMM Loss", "SiTXL_cfg_SRCC"] == -0.02
    assert list(t3.index) == ["-PSNR", "-SSIM", "LPIPS", "rFID", "Diffusion Loss", "EQ Loss", "SE Loss", "VF Loss",
                              "GMM Loss", "iFID"]


def test_ifid_table1_rows() -> None:
    t1 = load_paper_table("ifid_table1").set_index("metric")
    assert t1.loc["rFID"].tolist() == [1.00, 0.37, 0.20, -0.01, 0.02, 0.00, -0.06]
    assert t1.loc["iFID"].tolist() == [0.06, 0.26, 0.67, 0.69, 0.77, 0.85, 0.89]
    # Spec §2.4 step 5: the t = 1.0 column equals Table 3's SiT-XL w/o cfg PCC.
    for metric in ("rFID", "iFID"):
        assert t1.loc[metric, "t=1.0(gFID)"] == paper_value("ifid_table3", "SiTXL_nocfg_PCC", metric=metric)


def test_headline_ifid_agrees_across_tables_3_4_5() -> None:
    # Spec §3.1: Table 3's iFID row == Table 4's last row == Table 5's alpha = 0.5 row.
    t4 = load_paper_table("ifid_table4").iloc[-1]
    t5 = load_paper_table("ifid_table5").set_index("alpha").loc[0.5]
    for cfg in ("nocfg", "cfg"):
        for stat in ("PCC", "SRCC"):
            t3 = paper_value("ifid_table3", f"SiTXL_{cfg}_{stat}", metric="iFID")
            assert t4[f"{cfg}_{stat}"] == t5[f"{cfg}_{stat}"] == t3
    # alpha = 0 is rFID (Table 5's first row equals Table 3's rFID row, SiT-XL).
    assert paper_value("ifid_table5", "nocfg_SRCC", alpha=0.0) == paper_value("ifid_table3", "SiTXL_nocfg_SRCC",
                                                                                metric="rFID")
    assert paper_value("ifid_table4", "nocfg_PCC", interpolation="Spherical", n_ref_images="200k", K=1) == 0.88


def test_readme_values_reproduce_the_spec_regression() -> None:
    # Spec §3.7 / §6: README iFID vs README gFID, SiT-XL (13 VAEs) 0.903 / 0.918, SiT-B (12) 0.859 / 0.846,
    # all 14 rows (XL) 0.896 / 0.881.
    table = load_paper_table("ifid_readme_values")
    paper13 = table[table["vae"] != "VA-VAE (c64)"]
    assert len(paper13) == 13
    for rows, col, pcc, srcc in ((paper13, "gFID_SiTXL_nocfg", 0.903, 0.918), (paper13, "gFID_SiTB_nocfg", 0.859, 0.846),
                                 (table, "gFID_SiTXL_nocfg", 0.896, 0.881)):
        ok = rows[col].notna()
        assert scipy.stats.pearsonr(rows["iFID"][ok], rows[col][ok]).statistic == pytest.approx(pcc, abs=5e-4)
        assert scipy.stats.spearmanr(rows["iFID"][ok], rows[col][ok]).statistic == pytest.approx(srcc, abs=5e-4)
    assert math.isnan(table.set_index("vae").loc["RAE", "gFID_SiTB_nocfg"])


def test_seesaw_table5_spatial_is_the_mean_and_six_gfids() -> None:
    t5 = load_paper_table("seesaw_table5")
    # Spec A.10: Spatial = mean(Canny, Depth, Seg) within 1e-4 on every row.
    assert np.allclose(t5[["Canny", "Depth", "Seg"]].mean(axis=1), t5["Spatial"], atol=1e-4)
    assert t5["gFID"].notna().sum() == 6
    assert t5.set_index("weight_name").loc["e2d-vavae-hf", "gFID"] == 1.69
    # Spec §6 oracle: Spearman(PSNR, Spatial) over the 33 rows = -0.989.
    assert scipy.stats.spearmanr(t5["PSNR"], t5["Spatial"]).statistic == pytest.approx(-0.989, abs=5e-4)
    assert load_paper_table("seesaw_table4").set_index("hyperparameter").loc["learning_rate", "value"] == \
        "(lost in extraction)"
    assert load_paper_table("seesaw_table2").set_index("model").loc["VTP-B"].isna().sum() == 3


@pytest.mark.skipif(not SPEC.exists(), reason="spec not available")
def test_files_are_the_spec_csv_blocks_verbatim() -> None:
    text = SPEC.read_text()
    appendix = text[text.index("## Appendix A"):]
    parts = re.split(r"\n### (A\.\d+) ", appendix)
    for section, body in zip(parts[1::2], parts[2::2]):
        block = re.search(r"```csv\n(.*?)```", body, re.DOTALL).group(1)
        assert (PAPER_DIR / f"{SECTION_OF[section]}.csv").read_text() == block, section


def test_damaged_or_unknown_tables_raise(tmp_path) -> None:
    with pytest.raises(ValueError, match="name"):
        load_paper_table("ifid_table9")
    with pytest.raises(ValueError, match="not found"):
        load_paper_table("ifid_table1", tmp_path)
    lines = (PAPER_DIR / "ifid_table3.csv").read_text().splitlines()
    (tmp_path / "ifid_table3.csv").write_text("\n".join(lines[:-1]) + "\n")  # a row lost
    with pytest.raises(ValueError, match="9 rows"):
        load_paper_table("ifid_table3", tmp_path)
    (tmp_path / "ifid_table1.csv").write_text((PAPER_DIR / "ifid_table1.csv").read_text().replace("t=0.1", "t=.1"))
    with pytest.raises(ValueError, match="header"):
        load_paper_table("ifid_table1", tmp_path)
    with pytest.raises(ValueError, match="matches 4 rows"):
        paper_value("ifid_table4", "nocfg_PCC", interpolation="Spherical")
    with pytest.raises(ValueError, match="column"):
        paper_value("ifid_table3", "SiTL_nocfg_PCC", metric="iFID")


def test_loaded_tables_are_copies() -> None:
    first = load_paper_table("ifid_table1")
    first.loc[0, "t=0.1"] = 99.0
    assert load_paper_table("ifid_table1").loc[0, "t=0.1"] == 0.37


def test_seesaw_table1_survey_counts() -> None:
    # Seed 003 §4: of 8 works, 2 report no reconstruction metric, 4 only rFID, 2 rFID and
    # instance-level metrics; all 5 ablation papers picked the best gFID, only VTP also the best rFID.
    t1 = load_paper_table("seesaw_table1").set_index("model")
    instance = (t1[["reports_PSNR", "reports_LPIPS", "reports_SSIM"]] == "yes").any(axis=1)
    rfid = t1["reports_rFID"] == "yes"
    assert ((~rfid) & (~instance)).sum() == 2 and (rfid & ~instance).sum() == 4 and (rfid & instance).sum() == 2
    ablation = t1[t1["pick_best_gFID"].notna()]
    assert len(ablation) == 5 and (ablation["pick_best_gFID"] == "yes").all()
    assert ablation.index[ablation["pick_best_rFID"] == "yes"].tolist() == ["VTP"]
