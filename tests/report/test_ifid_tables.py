"""The iFID paper's tables on a synthetic study (latentbench.report.ifid_tables).

The synthetic study has known inputs: per-tokenizer metrics drawn at random, gFID built from
iFID plus noise, gFID(t) and iFID-variant files with random values. Every correlation the
section reports is checked against scipy on the same vectors, every paper cell against the
transcribed CSV, and every missing input against its "why" message.
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
from matplotlib.figure import Figure

from latentbench.analysis.metric_info import METRICS
from latentbench.analysis.regression import oriented, oriented_label
from latentbench.io import write_json
from latentbench.report import ifid_tables
from latentbench.report.ifid_tables import TABLE3_ROWS, ifid_section, map_backbones
from latentbench.report.paper_values import load_paper_table
from latentbench.report.render import report_env
from latentbench.stages.report import correlations

BACKBONES = {"sit-b": {"size": "B", "recipe": "ifid_sit"}, "sit-xl": {"size": "XL", "recipe": "ifid_sit"}}
SCALES = [1.0, 1.5, 2.0]
T_GRID = [0.1, 0.2, 0.4, 0.6, 0.8]
# Table 4 rows (interpolation, reference fraction, K) at alpha 0.5, then Table 5's alpha grid (slerp, full, K = 4).
STUDY_K = 4
T4_VARIANTS = [("linear", 0.039028, 1), ("mask", 0.039028, 1), ("slerp", 0.039028, 1), ("slerp", 0.156107, 1),
               ("slerp", 1.0, 1)]
ALPHAS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75]
N_BOOT = 20
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synthetic_study(root, n_tok: int = 6, scales=SCALES, backbones=BACKBONES, gfid_t: bool = True,
                    variants: bool = True, seed: int = 0):
    """metrics.csv frame, config, and gfid_t.json / ifid_variants.json files under ``root``."""
    rng = np.random.default_rng(seed)
    toks = [f"tok{i}" for i in range(n_tok)]
    rows = []
    for i, tok in enumerate(toks):
        rfid, ifid = rng.uniform(0.5, 2.0), rng.uniform(1.0, 5.0)
        per_tok = {"rfid": rfid, "ifid": ifid, "psnr": rng.uniform(20, 30), "ssim": rng.uniform(0.5, 0.9),
                   "eq_loss": math.nan if i == 0 else rng.uniform(0.1, 0.3),  # tok0: a "1-D" tokenizer
                   "se_loss": math.nan if i == 0 else rng.uniform(0.1, 0.3), "vf_loss": rng.uniform(0.5, 1.5),
                   "gmm_loss": rng.uniform(1.0, 2.0), "viv": rng.uniform(0, 1)}
        if variants:
            entries = [{"interpolation": m, "num_references": round(300 * fr), "reference_fraction": fr, "k": k,
                        "alpha": 0.5, "ifid": rng.uniform(1.0, 5.0), "rfid": rfid} for m, fr, k in T4_VARIANTS]
            entries += [{"interpolation": "slerp", "num_references": 300, "reference_fraction": 1.0, "k": STUDY_K,
                         "alpha": a, "ifid": rfid if a == 0.0 else rng.uniform(1.0, 5.0), "rfid": rfid}
                        for a in ALPHAS]
            write_json(root / "metrics" / tok / "ifid_variants.json", {"variants": entries, "feature_net": "demo-cnn"})
            write_json(root / "metrics" / tok / "reconstruction.json",
                       {"not_run": {"lpips": "not run: needs LPIPS AlexNet weights"}})
        for b, bb in enumerate(backbones):
            loss = rng.uniform(0.4, 0.6)
            if gfid_t:
                write_json(root / "metrics" / tok / bb / "gfid_t.json",
                           {"t": T_GRID, "gfid_t": rng.uniform(1, 10, len(T_GRID)).tolist(), "time": "unshifted",
                            "num_images": 200})
            for w in scales:
                gfid = (1 + b) * (3.0 * ifid + rng.normal(0, 1.0)) / w
                rows.append({"tokenizer": tok, "label": tok, "family": "conv_kl", "regularizer": "baseline",
                             "variant": "-", "kl_weight": 1e-6, "backbone": bb, "recipe": "ifid_sit",
                             "cfg_scale": w, "gfid": gfid, "num_samples": 100, "diffusion_loss": loss,
                             **per_tok, "feature_net": "demo-cnn"})
    config = {"study": "synthetic", "tokenizers": {t: {} for t in toks}, "backbones": dict(backbones),
              "ifid": {"k": STUDY_K}, "analysis": {"target": "gfid"}}
    return pd.DataFrame(rows), config


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("ifid")
    frame, config = synthetic_study(root)
    return {"root": root, "frame": frame, "config": config, "ctx": ifid_section(root, frame, config, N_BOOT, 0)}


def _sel(frame, bb, w):
    return frame[(frame["backbone"] == bb) & (frame["cfg_scale"] == w)].set_index("tokenizer")


def _scipy(x, y):
    ok = ~(np.isnan(np.asarray(x, float)) | np.isnan(np.asarray(y, float)))
    x, y = np.asarray(x, float)[ok], np.asarray(y, float)[ok]
    return scipy.stats.pearsonr(x, y).statistic, scipy.stats.spearmanr(x, y).statistic, int(ok.sum())


def _render(ctx) -> str:
    """Render the section the way page_ifid.html.j2 does: included, with the context as ``ifid``."""
    env = report_env()
    env.loader = jinja2.ChoiceLoader([jinja2.DictLoader({"page.html.j2": "<body>{% include 'ifid.html.j2' %}</body>"}),
                                      env.loader])
    return env.get_template("page.html.j2").render(ifid=ctx)


def _is_png_uri(uri) -> bool:
    prefix = "data:image/png;base64,"
    return isinstance(uri, str) and uri.startswith(prefix) and base64.b64decode(uri[len(prefix):])[:8] == PNG_MAGIC


# --------------------------------------------------------------------------- Table 3


def test_table3_matches_scipy_with_the_sign_convention(study) -> None:
    ctx, frame = study["ctx"], study["frame"]
    groups = ctx["groups"]
    assert [(g["backbone"], g["key"], g["w_text"]) for g in groups] == [
        ("sit-b", "nocfg", "1"), ("sit-b", "cfg", "2"), ("sit-xl", "nocfg", "1"), ("sit-xl", "cfg", "2")]
    rows = {r["metric"]: r for r in ctx["table3"]["rows"]}
    assert [r["metric"] for r in ctx["table3"]["rows"]] == [m for m, _ in TABLE3_ROWS]
    for metric, sign in (("psnr", -1), ("ssim", -1), ("rfid", 1), ("diffusion_loss", 1), ("eq_loss", 1),
                         ("gmm_loss", 1), ("ifid", 1)):
        for g, cell in zip(groups, rows[metric]["cells"]):
            units = _sel(frame, g["backbone"], 1.0 if g["key"] == "nocfg" else 2.0)
            pcc, srcc, n = _scipy(sign * units[metric], units["gfid"])
            assert cell["ours"]["ok"], (metric, g)
            assert cell["ours"]["pcc"] == pytest.approx(pcc, abs=1e-12)
            assert cell["ours"]["srcc"] == pytest.approx(srcc, abs=1e-12)
            assert cell["ours"]["n"] == n == (5 if metric == "eq_loss" else 6)
    # −PSNR is the negation of PSNR: its PCC has the opposite sign of the raw column's.
    units = _sel(frame, "sit-b", 1.0)
    assert rows["psnr"]["cells"][0]["ours"]["pcc"] == pytest.approx(
        -scipy.stats.pearsonr(units["psnr"], units["gfid"]).statistic, abs=1e-12)
    assert rows["psnr"]["label"] == "−PSNR"
    assert any("EQ loss: not evaluated for 1 tokenizer" in n for n in ctx["table3"]["notes"])


def test_table3_paper_cells_follow_the_backbone_mapping(study) -> None:
    ctx = study["ctx"]
    paper = load_paper_table("ifid_table3").set_index("metric")
    assert [m["paper"] for m in ctx["mapping"]] == ["SiT-B", "SiT-XL"]
    ifid_row = next(r for r in ctx["table3"]["rows"] if r["metric"] == "ifid")
    got = [v for c in ifid_row["cells"] for v in (c["paper_pcc"]["value"], c["paper_srcc"]["value"])]
    # Our column order is (sit-b w/o, sit-b w/, sit-xl w/o, sit-xl w/), exactly the paper's A.3 order.
    assert got == paper.loc["iFID"].tolist() == [0.85, 0.86, 0.82, 0.84, 0.89, 0.91, 0.88, 0.92]
    lpips = next(r for r in ctx["table3"]["rows"] if r["metric"] == "lpips")
    assert lpips["why"] == "not run: needs LPIPS AlexNet weights"
    assert all(c["ours"]["why"] == lpips["why"] for c in lpips["cells"])
    assert lpips["cells"][0]["paper_pcc"]["text"] == "-0.73"


def test_table3_lpips_is_used_as_is_when_measured(tmp_path) -> None:
    frame, config = synthetic_study(tmp_path, gfid_t=False, variants=False)
    rng = np.random.default_rng(3)
    lp = {t: rng.uniform(0.05, 0.3) for t in frame["tokenizer"].unique()}
    frame["lpips"] = frame["tokenizer"].map(lp)
    frame = frame.drop(columns=["vf_loss"])
    ctx = ifid_section(tmp_path, frame, config, n_boot=0)
    rows = {r["metric"]: r for r in ctx["table3"]["rows"]}
    units = _sel(frame, "sit-xl", 1.0)
    assert rows["lpips"]["cells"][2]["ours"]["pcc"] == pytest.approx(_scipy(units["lpips"], units["gfid"])[0])
    assert rows["vf_loss"]["why"] == "not measured in this study"
    assert rows["lpips"]["cells"][2]["ours"]["pcc_ci"] == ""  # n_boot = 0: no interval


# --------------------------------------------------------------------------- Table 1


def test_table1_gfid_t_correlations(study) -> None:
    ctx, frame, root = study["ctx"], study["frame"], study["root"]
    t1 = ctx["table1"]
    assert [c["t"] for c in t1["columns"]] == [0.0, *T_GRID, 1.0]
    ours = {(r["metric"], r["backbone"]): r["cells"] for r in t1["rows"] if r["who"] == "ours"}
    paper = {r["metric"]: r["cells"] for r in t1["rows"] if r["who"] == "paper"}
    for bb in BACKBONES:
        units = _sel(frame, bb, 1.0)
        toks = list(units.index)
        gt = pd.DataFrame({t: pd.read_json(root / "metrics" / t / bb / "gfid_t.json", typ="series")["gfid_t"]
                           for t in toks}).T
        for metric, label in (("rfid", "rFID"), ("ifid", "iFID")):
            cells = ours[(label, bb)]
            targets = [units["rfid"], *[gt[j] for j in range(len(T_GRID))], units["gfid"]]
            for cell, y in zip(cells, targets):
                assert cell["pcc"] == pytest.approx(_scipy(units[metric], y)[0], abs=1e-12)
            if metric == "rfid":
                assert cells[0]["pcc"] == pytest.approx(1.0)  # t = 0: rFID with itself
    assert [c["value"] for c in paper["iFID"]] == [0.06, 0.26, 0.67, 0.69, 0.77, 0.85, 0.89]
    assert [c["value"] for c in paper["rFID"]] == [1.00, 0.37, 0.20, -0.01, 0.02, 0.00, -0.06]
    # Paper rows directly follow our rows of the same metric.
    order = [(r["metric"], r["who"]) for r in t1["rows"]]
    assert order == [("rFID", "ours"), ("rFID", "ours"), ("rFID", "paper"), ("iFID", "ours"), ("iFID", "ours"),
                     ("iFID", "paper")]
    assert t1["paper_backbone_ours"] == "sit-xl"
    assert any("unshifted" in n for n in t1["notes"])


def test_table1_without_gfid_t_says_why(tmp_path) -> None:
    frame, config = synthetic_study(tmp_path, gfid_t=False)
    t1 = ifid_section(tmp_path, frame, config, n_boot=0)["table1"]
    cells = next(r["cells"] for r in t1["rows"] if r["who"] == "ours")
    assert cells[0]["ok"] and cells[-1]["ok"]  # t = 0 and t = 1.0 come from metrics.csv
    for cell in cells[1:-1]:
        assert not cell["ok"]
        assert cell["why"].startswith("gFID(t) not computed in this study")


def test_table1_partial_gfid_t_leaves_tokenizers_out(tmp_path) -> None:
    frame, config = synthetic_study(tmp_path)
    for tok in ("tok1", "tok2", "tok3", "tok4"):
        (tmp_path / "metrics" / tok / "sit-b" / "gfid_t.json").unlink()
    t1 = ifid_section(tmp_path, frame, config, n_boot=0)["table1"]
    cells = next(r["cells"] for r in t1["rows"] if r["who"] == "ours" and r["backbone"] == "sit-b")
    assert cells[1]["why"] == "needs ≥ 3 tokenizers (has 2)"
    assert any(n.startswith("sit-b: no gfid_t.json for tok1, tok2, tok3, tok4") for n in t1["notes"])


# --------------------------------------------------------------------------- Tables 4, 5


def _variant_x(root, toks, **match):
    out = []
    for tok in toks:
        entries = pd.read_json(root / "metrics" / tok / "ifid_variants.json", typ="series")["variants"]
        hit = [v for v in entries if all(np.isclose(v[k], m) if isinstance(m, float) else v[k] == m
                                         for k, m in match.items())]
        assert len(hit) == 1
        out.append(hit[0]["ifid"])
    return np.array(out)


def test_table4_rows_match_the_paper_and_scipy(study) -> None:
    ctx, frame, root = study["ctx"], study["frame"], study["root"]
    rows = ctx["table4"]["rows"]
    paper = load_paper_table("ifid_table4")
    labels = [(r["interpolation"], r["paper_n_ref_images"], r["paper_K"], r["k"]) for r in rows]
    assert labels == [("Linear", "50k", "1", "1"), ("Mask", "50k", "1", "1"), ("Spherical", "50k", "1", "1"),
                      ("Spherical", "200k", "1", "1"), ("Spherical", "1000k", "1", "1"),
                      ("Spherical", "1000k", "10", str(STUDY_K))]
    for row, (_, p) in zip(rows, paper.iterrows()):
        assert [row[f"paper_{c}"]["value"] for c in ("nocfg_PCC", "nocfg_SRCC", "cfg_PCC", "cfg_SRCC")] == \
            [p["nocfg_PCC"], p["nocfg_SRCC"], p["cfg_PCC"], p["cfg_SRCC"]]
    units = _sel(frame, "sit-xl", 2.0)
    x = _variant_x(root, units.index, interpolation="mask", reference_fraction=0.039028, k=1, alpha=0.5)
    pcc, srcc, _ = _scipy(x, units["gfid"])
    cell = rows[1]["cells"][3]  # (sit-xl, w/ guidance)
    assert (cell["pcc"], cell["srcc"]) == (pytest.approx(pcc, abs=1e-12), pytest.approx(srcc, abs=1e-12))
    assert "12 (3.9% of train)" == rows[0]["references"]


def test_table5_alpha_rows(study) -> None:
    ctx, frame, root = study["ctx"], study["frame"], study["root"]
    t5 = ctx["table5"]
    assert t5["k"] == STUDY_K
    assert [r["alpha"] for r in t5["rows"]] == ["0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.75"]
    by_alpha = {r["alpha"]: r for r in t5["rows"]}
    assert by_alpha["0"]["rfid_cell"]["pcc"] == pytest.approx(1.0)  # iFID(0) = rFID (spec §3.7)
    units = _sel(frame, "sit-b", 1.0)
    x = _variant_x(root, units.index, interpolation="slerp", reference_fraction=1.0, k=STUDY_K, alpha=0.3)
    assert by_alpha["0.3"]["rfid_cell"]["srcc"] == pytest.approx(_scipy(x, units["rfid"])[1], abs=1e-12)
    assert by_alpha["0.3"]["cells"][0]["pcc"] == pytest.approx(_scipy(x, units["gfid"])[0], abs=1e-12)
    assert by_alpha["0.5"]["paper_nocfg_PCC"]["value"] == 0.89 and by_alpha["0.1"]["paper_rFID_SRCC"]["value"] == 0.67
    assert by_alpha["0.75"]["paper_nocfg_PCC"]["text"] == "—"  # not in the paper's grid
    assert t5["notes"] == []


def test_missing_variant_files_say_not_computed(tmp_path) -> None:
    frame, config = synthetic_study(tmp_path, variants=False)
    ctx = ifid_section(tmp_path, frame, config, n_boot=0)
    for key in ("table4", "table5"):
        assert not ctx[key]["available"]
        assert ctx[key]["why"].startswith("not computed in this study")
    html = _render(ctx)
    assert "Not computed: not computed in this study (no metrics/&lt;tok&gt;/ifid_variants.json)." in html


def test_variant_file_for_some_tokenizers_only(tmp_path) -> None:
    frame, config = synthetic_study(tmp_path)
    (tmp_path / "metrics" / "tok5" / "ifid_variants.json").unlink()
    ctx = ifid_section(tmp_path, frame, config, n_boot=0)
    assert ctx["table4"]["rows"][0]["cells"][0]["n"] == 5
    assert ctx["table5"]["notes"] == ["no ifid_variants.json for tok5; those tokenizers are left out."]


def test_malformed_variant_file_names_the_file(tmp_path) -> None:
    frame, config = synthetic_study(tmp_path, variants=False)
    write_json(tmp_path / "metrics" / "tok2" / "ifid_variants.json", {"variants": [{"interpolation": "slerp"}]})
    with pytest.raises(ValueError, match=r"tok2/ifid_variants.json: variants\[0\] is malformed"):
        ifid_section(tmp_path, frame, config, n_boot=0)


# --------------------------------------------------------------------------- small studies, mapping


def test_two_tokenizers_and_one_scale_say_why(tmp_path) -> None:
    frame, config = synthetic_study(tmp_path, n_tok=2, scales=[1.0])
    ctx = ifid_section(tmp_path, frame, config, n_boot=0)
    ifid_row = next(r for r in ctx["table3"]["rows"] if r["metric"] == "ifid")
    assert ifid_row["cells"][0]["ours"]["why"] == "needs ≥ 3 tokenizers (has 2)"
    assert ifid_row["cells"][1]["ours"]["why"] == "no guidance scale w ≠ 1 sampled"
    assert not ctx["table3"]["available"]
    assert ctx["groups"][1]["w_text"] == "n/a"
    html = _render(ctx)
    assert "needs ≥ 3 tokenizers (has 2)" in html and "no guidance scale w ≠ 1 sampled" in html


def test_constant_metric_says_why(tmp_path) -> None:
    frame, config = synthetic_study(tmp_path, gfid_t=False, variants=False)
    frame["gmm_loss"] = 1.5
    ctx = ifid_section(tmp_path, frame, config, n_boot=0)
    gmm = next(r for r in ctx["table3"]["rows"] if r["metric"] == "gmm_loss")
    assert gmm["cells"][0]["ours"]["why"] == "metric constant across tokenizers"


def test_map_backbones() -> None:
    sizes = lambda **kw: {"backbones": {k: {"size": v} for k, v in kw.items()}}
    assert map_backbones(["a", "b"], sizes(a="XL", b="B"))[0] == {"a": "SiT-XL", "b": "SiT-B"}
    assert map_backbones(["sit-demo"], sizes(**{"sit-demo": "demo"}))[0] == {"sit-demo": "SiT-XL"}
    # No same-size backbone: the larger takes SiT-XL.
    assert map_backbones(["d", "s"], sizes(d="demo", s="S"))[0] == {"d": "SiT-B", "s": "SiT-XL"}
    # A same-size match first, then the rest by size; a third backbone has no column.
    mapping, how = map_backbones(["x", "l", "s"], sizes(x="XL", l="L", s="S"))
    assert mapping == {"x": "SiT-XL", "l": "SiT-B", "s": None}
    assert "same size" in how[0] and "no paper column" in how[2]
    # Without sizes in the config, the name decides.
    assert map_backbones(["SiT-B/2", "SiT-XL/2"], {})[0] == {"SiT-B/2": "SiT-B", "SiT-XL/2": "SiT-XL"}


# --------------------------------------------------------------------------- Figure 1, template, errors


def test_figure1(study) -> None:
    f1 = study["ctx"]["figure1"]
    assert f1["available"] and _is_png_uri(f1["figure"]) and _is_png_uri(f1["readme"]["figure"])
    units = _sel(study["frame"], "sit-b", 1.0)
    cell = next(c for c in f1["cells"] if c["backbone"] == "sit-b" and c["label"] == "iFID")
    assert cell["pcc"] == pytest.approx(_scipy(units["ifid"], units["gfid"])[0], abs=1e-12)
    readme = {c["backbone"]: c for c in f1["readme"]["cells"]}
    assert readme["SiT-XL"]["pcc"] == pytest.approx(0.903, abs=5e-4) and readme["SiT-B"]["n"] == 12


def test_template_renders_strictly(study) -> None:
    html = _render(study["ctx"])
    assert '<h2 id="ifid-tables">iFID paper tables</h2>' in html
    for anchor in ("ifid-table1", "ifid-table3", "ifid-table4", "ifid-table5", "ifid-figure1"):
        assert f'id="{anchor}"' in html
    assert "not run: needs LPIPS AlexNet weights" in html
    assert "demo-cnn" in html and "in place of InceptionV3" in html
    ifid_row = next(r for r in study["ctx"]["table3"]["rows"] if r["metric"] == "ifid")
    assert ifid_row["cells"][0]["ours"]["pcc_text"] in html
    assert "sit-b (size B) → SiT-B: same size." in html


def test_empty_and_bad_input() -> None:
    ctx = ifid_section(".", pd.DataFrame(), {}, n_boot=0)
    assert not ctx["available"] and "no rows" in ctx["why"]
    assert "Not shown: metrics.csv has no rows." in _render(ctx)
    with pytest.raises(ValueError, match="frame"):
        ifid_section(".", [1, 2], {})
    with pytest.raises(ValueError, match="n_boot"):
        ifid_section(".", pd.DataFrame({"a": [1]}), {}, n_boot=-1)
    with pytest.raises(ValueError, match="missing column"):
        ifid_section(".", pd.DataFrame({"tokenizer": ["a"]}), {})


# --------------------------------------------------------------------------- analysis.target, orientation


def test_orientation_has_one_helper_with_the_convention_as_a_parameter() -> None:
    df = pd.DataFrame({m: [1.0, -2.0, 3.5] for m in METRICS})
    for m, meta in METRICS.items():
        lower, larger = oriented(df, m, "lower"), oriented(df, m, "larger")
        assert lower.tolist() == (-df[m] if meta.higher_is_better else df[m]).tolist(), m
        assert (lower == -larger).all(), m
        assert oriented_label(m, "lower") == ("−" if meta.higher_is_better else "") + meta.label
    # Table 3's row labels are the "lower" labels of its metrics (A.3 spells "-PSNR" with a hyphen).
    assert [oriented_label(m, "lower").lower() for m, _ in TABLE3_ROWS] == \
        [label.replace("-", "−").lower() for _, label in TABLE3_ROWS]
    with pytest.raises(ValueError, match="better"):
        oriented(df, "psnr", "smaller")


def test_gfid_target_shows_no_comparability_note(study) -> None:
    ctx = study["ctx"]
    assert ctx["target"] == {"column": "gfid", "label": "gFID", "note": None, "predicts": "positive"}
    html = _render(ctx)
    assert "not comparable" not in html and "so a positive value means the metric predicts gFID" in html


def test_another_target_is_the_y_of_tables_3_to_5_and_figure_1(tmp_path, monkeypatch) -> None:
    frame, config = synthetic_study(tmp_path)
    noise = np.random.default_rng(1).uniform(-0.3, 0.3, len(frame))
    frame = frame.assign(linear_probe=50.0 - frame["gfid"] + noise)  # higher is better
    base = ifid_section(tmp_path, frame, config, n_boot=0)
    config = {**config, "analysis": {"target": "linear_probe"}}
    texts: list[str] = []

    def record(obj, name):
        if isinstance(obj, Figure):
            texts.extend(t for ax in obj.axes for t in (ax.get_ylabel(), ax.get_title()))
            plt.close(obj)
        return name

    monkeypatch.setattr(ifid_tables, "image_src", record)
    ctx = ifid_section(tmp_path, frame, config, n_boot=0)
    assert "Linear probe (w = 1)" in texts and not any("gFID" in t for t in texts)
    rows = {r["metric"]: r for r in ctx["table3"]["rows"]}
    for metric, sign in (("psnr", -1), ("rfid", 1), ("ifid", 1)):
        for g, cell in zip(ctx["groups"], rows[metric]["cells"]):
            units = _sel(frame, g["backbone"], 1.0 if g["key"] == "nocfg" else 2.0)
            pcc, srcc, _ = _scipy(sign * units[metric], units["linear_probe"])
            assert cell["ours"]["pcc"] == pytest.approx(pcc, abs=1e-12)
            assert cell["ours"]["srcc"] == pytest.approx(srcc, abs=1e-12)
    # the paper's cells are the paper's (against gFID) whatever the target
    base_rows = {r["metric"]: r for r in base["table3"]["rows"]}
    assert [c["paper_pcc"]["text"] for c in rows["ifid"]["cells"]] == \
        [c["paper_pcc"]["text"] for c in base_rows["ifid"]["cells"]]
    units = _sel(frame, "sit-b", 1.0)
    x = _variant_x(tmp_path, units.index, interpolation="slerp", reference_fraction=1.0, k=STUDY_K, alpha=0.3)
    by_alpha = {r["alpha"]: r for r in ctx["table5"]["rows"]}
    assert by_alpha["0.3"]["cells"][0]["pcc"] == pytest.approx(_scipy(x, units["linear_probe"])[0], abs=1e-12)
    cell = next(c for c in ctx["figure1"]["cells"] if c["backbone"] == "sit-b" and c["label"] == "iFID")
    assert cell["pcc"] == pytest.approx(_scipy(units["ifid"], units["linear_probe"])[0], abs=1e-12)
    # Table 1 is gFID(t)'s by definition: the same as with the gFID target
    def ours(t1):
        return [[c["pcc_text"] or c["why"] for c in r["cells"]] for r in t1["rows"] if r["who"] == "ours"]

    assert ours(ctx["table1"]) == ours(base["table1"]) and ours(ctx["table1"])[0][-1] != ""
    assert ctx["target"]["predicts"] == "negative"
    html = _render(ctx)
    assert str(escape(ctx["target"]["note"])) in html and "against Linear probe" in ctx["target"]["note"]
    assert "Table 3: VAE metrics vs Linear probe" in html
    assert "so a negative value means the metric predicts Linear probe" in html


def test_missing_target_column_names_analysis_target(tmp_path) -> None:
    frame, config = synthetic_study(tmp_path, gfid_t=False, variants=False)
    config["analysis"]["target"] = "fdr6"
    with pytest.raises(ValueError, match=r"^analysis\.target: column 'fdr6' is not in .*metrics\.csv$"):
        ifid_section(tmp_path, frame, config, n_boot=0)


def test_table3_and_figure1_cells_are_read_from_correlations_csv(tmp_path) -> None:
    frame, config = synthetic_study(tmp_path, gfid_t=False, variants=False)
    table = correlations(frame, "gfid", N_BOOT, 0)
    ctx = ifid_section(tmp_path, frame, config, n_boot=N_BOOT, seed=0, correlations=table)
    row = table[(table["metric"] == "psnr") & (table["backbone"] == "sit-b") & (table["cfg_scale"] == 1.0)].iloc[0]
    psnr = next(r for r in ctx["table3"]["rows"] if r["metric"] == "psnr")["cells"][0]["ours"]  # −PSNR
    assert (psnr["pcc"], psnr["srcc"], psnr["n"]) == (-row["pcc"], -row["srcc"], row["n"])
    assert psnr["pcc_ci"] == f"[{-row['pcc_hi']:.2f}, {-row['pcc_lo']:.2f}]"
    tampered = table.assign(pcc=0.5)
    ctx = ifid_section(tmp_path, frame, config, n_boot=0, seed=0, correlations=tampered)
    rows = {r["metric"]: r for r in ctx["table3"]["rows"]}
    assert rows["psnr"]["cells"][0]["ours"]["pcc"] == -0.5 and rows["ifid"]["cells"][3]["ours"]["pcc"] == 0.5
    assert {c["pcc"] for c in ctx["figure1"]["cells"]} == {0.5}
    # Tables 4 and 5 (iFID variants) are not correlations.csv rows; a two-family study pools families
    frame2 = frame.assign(family=np.where(frame["tokenizer"].isin(["tok0", "tok1"]), "trans", "conv_kl"))
    ctx = ifid_section(tmp_path, frame2, config, n_boot=0, seed=0, correlations=tampered)
    units = _sel(frame2, "sit-b", 1.0)
    assert ctx["table3"]["rows"][0]["cells"][0]["ours"]["pcc"] == pytest.approx(
        _scipy(-units["psnr"], units["gfid"])[0], abs=1e-12)


def test_a_table3_metric_that_is_the_target_is_not_correlated_with_itself(tmp_path) -> None:
    frame, config = synthetic_study(tmp_path, gfid_t=False, variants=False)
    config["analysis"]["target"] = "diffusion_loss"
    ctx = ifid_section(tmp_path, frame, config, n_boot=0)
    rows = {r["metric"]: r for r in ctx["table3"]["rows"]}
    assert rows["diffusion_loss"]["why"] == "the correlation target itself (analysis.target)"
    assert not any(c["ours"]["ok"] for c in rows["diffusion_loss"]["cells"]) and rows["ifid"]["cells"][0]["ours"]["ok"]
