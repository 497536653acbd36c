"""The diffusability report section (spec metrics-diffusability.md §13) on a synthetic study.

The synthetic study is built so the answers are known: at (sit-a, w = 1) gFID is an exact
plane in LNC and SRSS (so that pair has R² = 1 and is the best), VIV tracks gFID with a little
noise, every tokenizer's best guidance scale is chosen, and the trajectory files hold known
length ratios.
"""

from __future__ import annotations

import base64
import math

import jinja2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scipy.stats
from markupsafe import escape

from latentbench.analysis.regression import oriented
from latentbench.io import write_json
from latentbench.report import diffusability
from latentbench.report.diffusability import (
    MAIN_PROXIES,
    PERSPECTIVES,
    backbone_order,
    diffusability_section,
)
from latentbench.report.render import report_env
from latentbench.stages.report import correlate_study, correlations

BACKBONES = ["sit-a", "sit-b"]
SCALES = [1.0, 1.5, 2.0]
N_BOOT = 40
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synthetic_study(root, n_tok: int = 6, families=("conv_kl",), scales=SCALES, seed: int = 0):
    """metrics.csv frame, config and latent/trajectory JSON under ``root`` for a made-up study."""
    rng = np.random.default_rng(seed)
    toks = [f"tok{i}" for i in range(n_tok)]
    regs = ["baseline", "mcos+mdms", "eq", "lcr", "mae", "lmr", "repa", "mdms"]
    lnc, srss = rng.uniform(0.1, 0.9, n_tok), rng.uniform(0.5, 1.5, n_tok)
    g0 = 20.0 - 8.0 * lnc - 5.0 * srss  # exact plane: R²(LNC, SRSS) = 1
    best_w = {t: scales[1 + i % (len(scales) - 1)] if len(scales) > 1 else scales[0] for i, t in enumerate(toks)}
    rows = []
    for i, tok in enumerate(toks):
        latent = {
            "viv": 0.05 * g0[i] + 0.02 * rng.standard_normal(),
            "sec": rng.uniform(0.0, 0.1),
            "lnc": lnc[i],
            "lds": rng.uniform(0.8, 1.0),
            "cds": rng.uniform(0.0, 0.2),
            "srss": srss[i],
            "normalized_entropy": rng.uniform(0.9, 1.0),
            "density_cv": rng.uniform(0.2, 0.4),
            "gini": rng.uniform(0.1, 0.3),
            "scale_eq": -rng.uniform(0.1, 0.5),
            "rotate_eq": -rng.uniform(0.3, 0.9),
            "ifid": rng.uniform(1.0, 3.0),
        }
        t = np.linspace(0.0, 1.0, 11)
        latent_json = {k: v for k, v in latent.items() if k != "ifid"}
        latent_json["viv_curve"] = {"t": t.tolist(), "viv": (latent["viv"] * (1 - t) + t).tolist()}
        write_json(root / "metrics" / tok / "latent.json", latent_json)
        for b, bb in enumerate(BACKBONES):
            ratio = 1.0 + 0.02 * (i + 1) * np.linspace(-1, 1, 9) * (b + 1)
            straight, eff = 1.0 - 0.001 * g0[i] + 0.0005 * rng.standard_normal(), 1.0 - 0.002 * g0[i]
            write_json(root / "metrics" / tok / bb / "trajectory.json",
                       {"straightness": straight, "efficiency": eff, "length_ratio": ratio.tolist(),
                        "segments": 9, "samples": 20})
            for w in scales:
                gfid = (1 + 0.3 * b) * g0[i] + 4.0 * ((w - best_w[tok]) ** 2 - (1.0 - best_w[tok]) ** 2)
                rows.append({
                    "tokenizer": tok, "label": tok, "family": families[i % len(families)],
                    "regularizer": regs[i % len(regs)], "variant": "-", "kl_weight": 1e-6,
                    "backbone": bb, "recipe": "study_sit", "cfg_scale": w, "gfid": gfid, "num_samples": 100,
                    "rfid": 1.0, "psnr": 25.0, "ssim": 0.8, "diffusion_loss": 0.5, "linear_probe": 0.3,
                    **latent, "straightness": straight, "efficiency": eff, "feature_net": "demo-cnn",
                })
    config = {"study": "synthetic", "tokenizers": {t: {} for t in toks},
              "backbones": {bb: {} for bb in BACKBONES}, "analysis": {"target": "gfid"}}
    return pd.DataFrame(rows), config, best_w


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    frame, config, best_w = synthetic_study(root)
    ctx = diffusability_section(root, frame, config, n_boot=N_BOOT, seed=0)
    return {"root": root, "frame": frame, "config": config, "best_w": best_w, "ctx": ctx}


def _units(frame, backbone="sit-a", scale=1.0, family=None):
    sel = frame[(frame["backbone"] == backbone) & (frame["cfg_scale"] == scale)]
    return sel if family is None else sel[sel["family"] == family]


def _is_png_uri(uri) -> bool:
    prefix = "data:image/png;base64,"
    return isinstance(uri, str) and uri.startswith(prefix) and base64.b64decode(uri[len(prefix):])[:8] == PNG_MAGIC


def _render(ctx) -> str:
    """Render the section the way index.html.j2 will: included, with the context as ``diffusability``."""
    env = report_env()
    env.loader = jinja2.ChoiceLoader([jinja2.DictLoader({"page.html.j2": '<body>{% include "diffusability.html.j2" %}</body>'}), env.loader])
    return env.get_template("page.html.j2").render(diffusability=ctx)


def test_every_figure_is_a_png(study) -> None:
    ctx = study["ctx"]
    assert ctx["available"] and ctx["setting"]["family"] == "conv_kl" and ctx["setting"]["backbone"] == "sit-a"
    for uri in (ctx["overview"]["figure"], ctx["guidance"]["figure"], ctx["regression"]["figure"],
                ctx["trajectories"]["scatter"], ctx["trajectories"]["ratio_figure"]):
        assert _is_png_uri(uri)
    assert all(ctx[k]["available"] for k in ("overview", "stability", "guidance", "regression", "trajectories"))


def test_perspective_ranking_is_ordered_by_abs_r_and_matches_scipy(study) -> None:
    units = _units(study["frame"])
    overview = study["ctx"]["overview"]
    ranking = overview["ranking"]
    assert [row["perspective"] for row in ranking] != []
    assert {row["perspective"] for row in ranking} == {p for p, _ in PERSPECTIVES}
    abs_r = [row["abs_r"] for row in ranking]
    assert abs_r == sorted(abs_r, reverse=True)
    for row in ranking:
        metrics = dict(PERSPECTIVES)[row["perspective"]]
        # Oracle: scipy Pearson r of each oriented metric (§1.6) against gFID; the main proxy has the largest |r|.
        rs = {m: scipy.stats.pearsonr(oriented(units, m), units["gfid"]).statistic for m in metrics}
        main = max(rs, key=lambda m: abs(rs[m]))
        assert row["metric"] == main
        assert row["r"] == pytest.approx(rs[main], abs=1e-12)
    # VIV tracks gFID: −VIV correlates strongly negatively and tops the ranking.
    assert overview["top"]["perspective"] == "Velocity ambiguity"
    assert overview["top"]["r"] < -0.9
    assert sum(p["main"] for p in overview["panels"]) == len(PERSPECTIVES)


def test_stability_table_columns_and_values(study) -> None:
    st = study["ctx"]["stability"]
    kinds = [c["kind"] for c in st["columns"]]
    assert kinds == ["primary (Fig. 4)", "backbone (Fig. 5)", "guidance", "guidance"]
    assert [row["metric"] for row in st["rows"]] == list(MAIN_PROXIES)
    viv = next(row for row in st["rows"] if row["metric"] == "viv")
    for cell, (bb, w) in zip(viv["cells"], [("sit-a", 1.0), ("sit-b", 1.0), ("sit-a", 1.5), ("sit-a", 2.0)]):
        units = _units(study["frame"], bb, w)
        assert cell["r"] == pytest.approx(scipy.stats.pearsonr(-units["viv"], units["gfid"]).statistic, abs=1e-12)
        assert cell["n"] == 6
        assert cell["lo"] <= cell["hi"]
    # One family: the section says why Fig. 6 is missing.
    assert any("one tokenizer family (conv_kl)" in note for note in st["notes"])
    assert not any("one backbone" in note for note in st["notes"])


def test_guidance_best_scale_and_best_cfg_correlation(study) -> None:
    g = study["ctx"]["guidance"]
    for row in g["best"]:
        for bb in BACKBONES:
            assert float(row["cells"][bb]["best_w"]) == study["best_w"][row["tokenizer"]]
    frame = study["frame"]
    best = frame[frame["backbone"] == "sit-a"].loc[lambda f: f.groupby("tokenizer")["gfid"].idxmin()]
    lnc = next(row for row in g["rows"] if row["metric"] == "lnc")
    assert lnc["cells"][0]["r"] == pytest.approx(scipy.stats.pearsonr(best["lnc"], best["gfid"]).statistic, abs=1e-12)
    assert len(lnc["cells"]) == len(BACKBONES)


def test_best_pair_is_lnc_srss_with_r2_one(study) -> None:
    rg = study["ctx"]["regression"]
    assert len(rg["rows"]) == 15
    best = rg["best"]
    assert set(best["metrics"]) == {"lnc", "srss"} and best["best"]
    assert best["r2"] == pytest.approx(1.0, abs=1e-10)
    assert rg["paper_pair"] is best and rg["paper_pair_rank"] == 1
    assert sum(row["best"] for row in rg["rows"]) == 1
    r2 = [row["r2"] for row in rg["rows"]]
    assert r2 == sorted(r2, reverse=True)


def test_trajectory_length_ratio_table(study) -> None:
    tr = study["ctx"]["trajectories"]
    units = _units(study["frame"])
    rows = {row["tokenizer"]: row for row in tr["ratio_table"]}
    for i, tok in enumerate(units["tokenizer"]):
        ratio = 1.0 + 0.02 * (i + 1) * np.linspace(-1, 1, 9)
        assert rows[tok]["deviation"] == pytest.approx(np.mean(np.abs(ratio - 1.0)), abs=1e-12)
        assert rows[tok]["segments"] == 9
    cells = {c["label"]: c for c in tr["cells"]}
    assert cells["Efficiency"]["r"] == pytest.approx(
        scipy.stats.pearsonr(units["efficiency"], units["gfid"]).statistic, abs=1e-12)
    assert tr["notes"] == []


def test_template_renders_every_analysis(study) -> None:
    html = _render(study["ctx"])
    assert "<h2 id=\"diffusability-analyses\">Diffusability analyses</h2>" in html
    for anchor in ("perspectives", "generalisation", "guidance", "regression", "trajectories"):
        assert f'id="diffusability-{anchor}"' in html
    assert html.count("data:image/png;base64,") == 6  # Figs. 4, 5-6, 7, 8, 9, 10
    assert _is_png_uri(study["ctx"]["stability"]["figure"])
    assert "R² = 0.91" in html and "r = −0.87" in html  # the paper's numbers in the captions
    assert "Not shown" not in html


def test_second_family_adds_fig6_column_and_missing_pieces_say_why(tmp_path) -> None:
    frame, config, _ = synthetic_study(tmp_path, n_tok=8, families=("conv_kl", "trans"), scales=[1.0])
    frame = frame.drop(columns=["ifid"])
    (tmp_path / "metrics" / "tok0" / "sit-a" / "trajectory.json").unlink()
    ctx = diffusability_section(tmp_path, frame, config, n_boot=0, seed=0)
    st = ctx["stability"]
    assert [c["kind"] for c in st["columns"]] == ["primary (Fig. 4)", "backbone (Fig. 5)", "family (Fig. 6)"]
    assert "−iFID" not in [row["label"] for row in st["rows"]]
    assert any("not measured" in note and "−iFID" in note for note in st["notes"])
    assert not ctx["guidance"]["available"] and "one guidance scale" in ctx["guidance"]["why"]
    assert any("iFID" in note for note in ctx["overview"]["notes"])
    assert len(ctx["regression"]["rows"]) == 10  # five measured proxies
    assert any("tok0" in note for note in ctx["trajectories"]["notes"])
    html = _render(ctx)
    assert "one guidance scale" in html and "tok0" in html


def test_too_few_tokenizers_says_why_instead_of_failing(tmp_path) -> None:
    frame, config, _ = synthetic_study(tmp_path, n_tok=3, scales=[1.5, 2.0])
    frame = frame[frame["backbone"] == "sit-a"]
    config["backbones"] = {"sit-a": {}}
    ctx = diffusability_section(tmp_path, frame, config, n_boot=0, seed=0)
    assert ctx["setting"]["w0"] == "1.5" and "smallest scale" in ctx["setting"]["w0_note"]
    assert ctx["overview"]["available"]
    assert not ctx["regression"]["available"] and "at least 4 tokenizers" in ctx["regression"]["why"]
    assert any("one backbone (sit-a)" in note for note in ctx["stability"]["notes"])
    frame2 = frame[frame["tokenizer"].isin(["tok0", "tok1"])]
    ctx2 = diffusability_section(tmp_path, frame2, config, n_boot=0, seed=0)
    assert not ctx2["overview"]["available"] and "at least 3 tokenizers" in ctx2["overview"]["why"]
    assert not ctx2["stability"]["available"]
    assert math.isnan(ctx2["trajectories"]["deviation_cell"]["r"])
    html = _render(ctx) + _render(ctx2)
    assert "Not shown: a two-metric fit" in html and "Not shown: needs at least 3 tokenizers" in html


def test_bad_input_raises(tmp_path) -> None:
    frame, config, _ = synthetic_study(tmp_path, n_tok=4, scales=[1.0])
    with pytest.raises(ValueError, match="family"):
        diffusability_section(tmp_path, frame.drop(columns=["family"]), config)
    with pytest.raises(ValueError, match="n_boot"):
        diffusability_section(tmp_path, frame, config, n_boot=-1)
    dup = pd.concat([frame, frame.iloc[:1]])
    with pytest.raises(ValueError, match="several rows"):
        diffusability_section(tmp_path, dup, config, n_boot=0)
    empty = diffusability_section(tmp_path, frame.iloc[:0], config)
    assert not empty["available"] and "no rows" in _render(empty)


def test_primary_backbone_is_the_most_trained_or_the_configured_one(tmp_path) -> None:
    # Like the study's design: all backbones on the primary family, SiT-B alone on the second.
    frame, config, _ = synthetic_study(tmp_path, n_tok=9, families=("conv", "conv", "trans"), scales=[1.0])
    trans = frame["family"] == "trans"
    frame = frame[~(trans & (frame["backbone"] == "sit-a"))]  # the trans family has sit-b only
    config["backbones"] = {"sit-a": {}, "sit-b": {}}  # key-sorted, as the report rule passes it
    assert backbone_order(config, frame) == ["sit-b", "sit-a"]  # sit-b is trained on all 9
    ctx = diffusability_section(tmp_path, frame, config, n_boot=0, seed=0)
    assert ctx["setting"]["backbone"] == "sit-b"
    fig6 = next(c for c in ctx["stability"]["columns"] if c["kind"] == "family (Fig. 6)")
    assert fig6["family"] == "trans" and fig6["backbone"] == "sit-b" and fig6["n"] == 3
    # an explicit choice wins; the trans family then falls back to the backbone it was trained with
    config["analysis"]["primary_backbone"] = "sit-a"
    assert backbone_order(config, frame) == ["sit-a", "sit-b"]
    ctx = diffusability_section(tmp_path, frame, config, n_boot=0, seed=0)
    fig6 = next(c for c in ctx["stability"]["columns"] if c["kind"] == "family (Fig. 6)")
    assert ctx["setting"]["backbone"] == "sit-a" and fig6["backbone"] == "sit-b" and fig6["n"] == 3


# --------------------------------------------------------------------------- analysis.target


def test_gfid_target_shows_no_comparability_note(study) -> None:
    ctx = study["ctx"]
    assert ctx["target"] == {"column": "gfid", "label": "gFID", "note": None, "predicts": "negative"}
    html = _render(ctx)
    assert "not comparable" not in html and "r &lt; 0 (blue cells" in html


def test_another_target_is_the_y_of_every_analysis(tmp_path, monkeypatch) -> None:
    frame, config, best_w = synthetic_study(tmp_path)
    # A higher-is-better target built from gFID (noise below the gaps between scales, so each
    # tokenizer's best w is gFID's), with values of its own.
    noise = np.random.default_rng(1).uniform(-0.3, 0.3, len(frame))
    frame = frame.assign(linear_probe=100.0 - frame["gfid"] + noise)
    config["analysis"]["target"] = "linear_probe"
    texts: list[str] = []

    def record(fig, name="diffusability") -> str:
        texts.extend(t for ax in fig.axes for t in (ax.get_ylabel(), ax.get_title()))
        plt.close(fig)
        return name

    monkeypatch.setattr(diffusability, "_uri", record)
    ctx = diffusability_section(tmp_path, frame, config, n_boot=0, seed=0)
    assert "Linear probe" in texts and "fitted Linear probe" in texts
    assert not any("gFID" in t for t in texts)
    units = _units(frame)
    overview = ctx["overview"]
    for row in overview["ranking"]:
        x = oriented(units, row["metric"])
        assert row["r"] == pytest.approx(scipy.stats.pearsonr(x, units["linear_probe"]).statistic, abs=1e-12)
    # −VIV predicts the target, which is higher-is-better: r > 0 and a blue cell.
    assert overview["top"]["perspective"] == "Velocity ambiguity" and overview["top"]["r"] > 0.9
    assert overview["top"]["cell"]["colour"].startswith("rgba(9,105,218,")
    viv = next(row for row in ctx["stability"]["rows"] if row["metric"] == "viv")
    assert viv["cells"][0]["r"] == pytest.approx(
        scipy.stats.pearsonr(-units["viv"], units["linear_probe"]).statistic, abs=1e-12)
    for row in ctx["guidance"]["best"]:  # the best w maximises a higher-is-better target
        tok = row["tokenizer"]
        assert float(row["cells"]["sit-a"]["best_w"]) == best_w[tok]
        best = frame[(frame["tokenizer"] == tok) & (frame["backbone"] == "sit-a") & (frame["cfg_scale"] == best_w[tok])]
        assert row["cells"]["sit-a"]["value"] == f"{best['linear_probe'].iloc[0]:.4g}"
    assert [r["value"] for r in ctx["trajectories"]["ratio_table"]] == units["linear_probe"].tolist()
    assert ctx["target"]["predicts"] == "positive" and ctx["target_label"] == "Linear probe"
    note = ctx["target"]["note"]
    assert "against Linear probe" in note and "against gFID" in note and "not comparable" in note
    html = _render(ctx)
    assert str(escape(note)) in html and "r &gt; 0 (blue cells" in html
    assert "OLS Linear probe ≈" in html and "OLS gFID" not in html


def test_target_must_be_a_metrics_column_with_metadata(tmp_path) -> None:
    frame, config, _ = synthetic_study(tmp_path, n_tok=4, scales=[1.0])
    config["analysis"]["target"] = "fdr6"
    with pytest.raises(ValueError, match=r"^analysis\.target: column 'fdr6' is not in .*metrics\.csv$") as missing:
        diffusability_section(tmp_path, frame, config, n_boot=0)
    # the same message as the correlate job's (stages/report.py) for the same study
    frame.to_csv(tmp_path / "metrics.csv", index=False)
    with pytest.raises(ValueError) as correlate_error:
        correlate_study(str(tmp_path / "metrics.csv"), {"seed": 0, "analysis": config["analysis"] | {"n_boot": 0}},
                        str(tmp_path / "correlations.csv"))
    assert str(missing.value) == str(correlate_error.value)
    config["analysis"]["target"] = "is"
    with pytest.raises(ValueError, match=r"analysis\.target: 'is' has no entry in metric_info"):
        diffusability_section(tmp_path, frame.assign(**{"is": 1.0}), config, n_boot=0)
    with pytest.raises(ValueError, match=r"analysis\.target: not in the config"):
        diffusability_section(tmp_path, frame, {"tokenizers": config["tokenizers"]}, n_boot=0)


def test_cells_that_are_correlations_csv_rows_are_read_from_it(tmp_path) -> None:
    frame, config, _ = synthetic_study(tmp_path)
    table = correlations(frame, "gfid", N_BOOT, 0)
    ctx = diffusability_section(tmp_path, frame, config, n_boot=N_BOOT, seed=0, correlations=table)
    row = table[(table["metric"] == "viv") & (table["backbone"] == "sit-a") & (table["cfg_scale"] == 1.0)].iloc[0]
    viv = next(p for p in ctx["overview"]["panels"] if p["metric"] == "viv")  # −VIV: the row negated
    assert (viv["r"], viv["lo"], viv["hi"], viv["n"]) == (-row["pcc"], -row["pcc_hi"], -row["pcc_lo"], row["n"])
    # read, not recomputed: a changed row shows on the page (Fig. 4, the stability table, Fig. 9) ...
    tampered = table.copy()
    tampered.loc[tampered["metric"].isin(["viv", "efficiency"]), "pcc"] = 0.5
    ctx = diffusability_section(tmp_path, frame, config, n_boot=0, seed=0, correlations=tampered)
    assert next(p for p in ctx["overview"]["panels"] if p["metric"] == "viv")["r"] == -0.5
    stab = next(r for r in ctx["stability"]["rows"] if r["metric"] == "viv")
    assert [c["r"] for c in stab["cells"]] == [-0.5] * len(stab["cells"])
    assert next(c for c in ctx["trajectories"]["cells"] if c["label"] == "Efficiency")["r"] == 0.5
    # ... but not where the page's tokenizers differ from the row's (here one has no gFID)
    fewer = frame.assign(gfid=frame["gfid"].where(frame["tokenizer"] != "tok0"))
    ctx = diffusability_section(tmp_path, fewer, config, n_boot=0, seed=0, correlations=tampered)
    units = _units(fewer).dropna(subset=["gfid"])
    viv = next(p for p in ctx["overview"]["panels"] if p["metric"] == "viv")
    assert viv["n"] == 5 and viv["r"] == pytest.approx(
        scipy.stats.pearsonr(-units["viv"], units["gfid"]).statistic, abs=1e-12)
