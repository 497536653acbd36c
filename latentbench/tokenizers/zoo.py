"""Appendix Table 1 of the diffusability study: the 86 trained tokenizers (spec §11.4).

Each row is (ID, architecture, config, regulariser cluster, variant), transcribed from the
paper's table (seed 001, "Implementation Details"). IDs 1-43 are Conv f16d32, 44-65 Conv
f16d64, 66-86 Trans. f16d32. Variants: foundation encoder (VF/REPA clusters), ``scale`` /
``flip`` (eq), ``w<w>-th<th>`` (lcr), ``p<a>-<b>-<c>`` (lmr), ``r<r>`` (mae), ``-`` (baseline).
:func:`tokenizer_config` turns a row into a registry config entry for paper-scale studies.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

# One row per line: ID,Arch,Config,Cluster,Variant (spec metrics-diffusability.md §11.4).
_TABLE1 = """
1,Conv,f16d32,baseline,-
2,Conv,f16d32,repa,CLIP-L
3,Conv,f16d32,mcos+mdms,CLIP-L
4,Conv,f16d32,mcos,CLIP-L
5,Conv,f16d32,mdms,CLIP-L
6,Conv,f16d32,repa,CRadio-B
7,Conv,f16d32,mcos+mdms,CRadio-B
8,Conv,f16d32,mcos,CRadio-B
9,Conv,f16d32,mdms,CRadio-B
10,Conv,f16d32,mcos+mdms,CRadio-L
11,Conv,f16d32,repa,DINOv2-B
12,Conv,f16d32,mcos+mdms,DINOv2-B
13,Conv,f16d32,mcos,DINOv2-B
14,Conv,f16d32,mdms,DINOv2-B
15,Conv,f16d32,mcos+mdms,DINOv2-L
16,Conv,f16d32,repa,DINOv3-B
17,Conv,f16d32,mcos+mdms,DINOv3-B
18,Conv,f16d32,mcos,DINOv3-B
19,Conv,f16d32,mdms,DINOv3-B
20,Conv,f16d32,mcos+mdms,DINOv3-L
21,Conv,f16d32,mcos+mdms,LangPE-L
22,Conv,f16d32,repa,MAE-L
23,Conv,f16d32,mcos+mdms,MAE-L
24,Conv,f16d32,mcos,MAE-L
25,Conv,f16d32,mdms,MAE-L
26,Conv,f16d32,mcos+mdms,MoCov3-L
27,Conv,f16d32,mcos+mdms,PE-B
28,Conv,f16d32,mcos+mdms,PE-L
29,Conv,f16d32,mcos+mdms,SpatialPE-B
30,Conv,f16d32,mcos+mdms,SpatialPE-L
31,Conv,f16d32,repa,WebSSL-300m
32,Conv,f16d32,mcos+mdms,WebSSL-300m
33,Conv,f16d32,mcos,WebSSL-300m
34,Conv,f16d32,mdms,WebSSL-300m
35,Conv,f16d32,eq,scale
36,Conv,f16d32,eq,flip
37,Conv,f16d32,lcr,w0.02-th0.60
38,Conv,f16d32,lcr,w0.02-th0.75
39,Conv,f16d32,lcr,w0.05-th0.70
40,Conv,f16d32,lcr,w0.05-th0.90
41,Conv,f16d32,lmr,p0.1-0.15-0.15
42,Conv,f16d32,lmr,p0.1-0.10-0.10
43,Conv,f16d32,lmr,p0.1-0.05-0.05
44,Conv,f16d64,baseline,-
45,Conv,f16d64,repa,CLIP-L
46,Conv,f16d64,mcos+mdms,CLIP-L
47,Conv,f16d64,mcos,CLIP-L
48,Conv,f16d64,mdms,CLIP-L
49,Conv,f16d64,repa,DINOv2-B
50,Conv,f16d64,mcos+mdms,DINOv2-B
51,Conv,f16d64,mcos,DINOv2-B
52,Conv,f16d64,mdms,DINOv2-B
53,Conv,f16d64,repa,DINOv3-B
54,Conv,f16d64,mcos+mdms,DINOv3-B
55,Conv,f16d64,mcos,DINOv3-B
56,Conv,f16d64,mdms,DINOv3-B
57,Conv,f16d64,repa,MAE-L
58,Conv,f16d64,mcos+mdms,MAE-L
59,Conv,f16d64,mcos,MAE-L
60,Conv,f16d64,mdms,MAE-L
61,Conv,f16d64,eq,scale
62,Conv,f16d64,lcr,w0.02-th0.75
63,Conv,f16d64,lcr,w0.05-th0.90
64,Conv,f16d64,lmr,p0.1-0.10-0.10
65,Conv,f16d64,lmr,p0.1-0.05-0.05
66,Trans,f16d32,baseline,-
67,Trans,f16d32,repa,CLIP-L
68,Trans,f16d32,mcos+mdms,CLIP-L
69,Trans,f16d32,mcos,CLIP-L
70,Trans,f16d32,mdms,CLIP-L
71,Trans,f16d32,repa,DINOv2-B
72,Trans,f16d32,mcos+mdms,DINOv2-B
73,Trans,f16d32,mcos,DINOv2-B
74,Trans,f16d32,mdms,DINOv2-B
75,Trans,f16d32,repa,DINOv3-B
76,Trans,f16d32,mcos+mdms,DINOv3-B
77,Trans,f16d32,mcos,DINOv3-B
78,Trans,f16d32,mdms,DINOv3-B
79,Trans,f16d32,repa,MAE-L
80,Trans,f16d32,mcos+mdms,MAE-L
81,Trans,f16d32,mcos,MAE-L
82,Trans,f16d32,mdms,MAE-L
83,Trans,f16d32,lcr,w0.02-th0.75
84,Trans,f16d32,lcr,w0.05-th0.90
85,Trans,f16d32,mae,r0.3
86,Trans,f16d32,mae,r0.7
"""

# Registry family per Table 1 architecture: the conv KL-VAE (models.md §3.1) and the ViT KL-VAE
# (models.md §3.2, a ViT-B/16 pair: the spec's assumption, the paper gives no architecture).
ARCH_FAMILY = {"Conv": "conv_kl", "Trans": "trans_kl"}


@dataclass(frozen=True)
class ZooEntry:
    """One Table 1 row."""

    id: int
    arch: str  # "Conv" | "Trans"
    config: str  # "f16d32" | "f16d64"
    cluster: str  # regulariser cluster
    variant: str  # "-" for the baseline

    @property
    def family(self) -> str:
        """The table's family label: conv-f16d32, conv-f16d64 or trans-f16d32."""
        return f"{self.arch.lower()}-{self.config}"

    @property
    def name(self) -> str:
        """A unique, file-name-safe label, e.g. ``t012-conv-f16d32-mcos+mdms-DINOv2-B``."""
        return f"t{self.id:03d}-{self.family}-{self.cluster}" + ("" if self.variant == "-" else f"-{self.variant}")


def _parse(text: str) -> tuple[ZooEntry, ...]:
    rows = []
    for line in text.strip().splitlines():
        id_, arch, config, cluster, variant = line.split(",")
        rows.append(ZooEntry(int(id_), arch, config, cluster, variant))
    return tuple(rows)


TABLE1: tuple[ZooEntry, ...] = _parse(_TABLE1)


def entry(tokenizer_id: int) -> ZooEntry:
    """The Table 1 row with this ID (1..86)."""
    for row in TABLE1:
        if row.id == tokenizer_id:
            return row
    raise ValueError(f"unknown Table 1 tokenizer id {tokenizer_id!r}; ids are 1..{len(TABLE1)}")


def family_counts() -> dict[str, int]:
    """Rows per family (spec: conv-f16d32 43, conv-f16d64 22, trans-f16d32 21)."""
    return dict(Counter(row.family for row in TABLE1))


def cluster_counts(family: str | None = None) -> dict[str, int]:
    """Rows per regulariser cluster, optionally within one family."""
    return dict(Counter(row.cluster for row in TABLE1 if family is None or row.family == family))


def tokenizer_config(row: ZooEntry | int, kl_weight: float = 1e-6) -> dict:
    """The study config entry (``tokenizers.<row.name>``) for a Table 1 row at paper scale (Eq. 12
    weights of §11.1), in its Table 1 family."""
    row = entry(row) if isinstance(row, int) else row
    return {
        "family": ARCH_FAMILY[row.arch],
        "study_family": row.family,
        "arch": row.config,
        "regularizer": row.cluster,
        "variant": row.variant,
        "kl_weight": kl_weight,
    }
