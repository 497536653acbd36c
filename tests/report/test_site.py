"""The report directory (latentbench.report.render): pages, navigation, files instead of data URIs,
the small-study banner, paper numbers quoted from the CSVs, the Seesaw page with and without drift."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from latentbench.report.paper_values import paper_text
from latentbench.report.render import PAGES, render_report
from latentbench.report.tokenizers import card_file

# fixtures `small` and `larger`: tests/report/conftest.py

def _srcs(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', html)


def test_every_page_exists_with_navigation_and_contents(small) -> None:
    report, config = small
    pages = [f for f, _ in PAGES] + [card_file(t) for t in config["tokenizers"]]
    for name in pages:
        html = (report / name).read_text()
        assert 'class="topnav"' in html and 'class="toc"' in html, name
        for target, _ in PAGES:  # the bar links every page
            assert f'href="{target}"' in html, (name, target)
        assert html.count('aria-current="page"') == 1, name


def test_images_are_files_next_to_the_pages_and_nothing_is_external(small) -> None:
    report, _ = small
    for page in report.glob("*.html"):
        html = page.read_text()
        assert "data:image" not in html, page.name
        for ref in _srcs(html):
            assert not re.match(r"^[a-z]+://", ref) and not ref.startswith("//"), (page.name, ref)
            path = ref.split("#")[0]
            if path:
                assert (report / path).is_file(), (page.name, ref)
    assert (report / "style.css").is_file() and (report / "img" / "overview-ranked-proxies.png").is_file()
    assert (report / "data" / "correlations.csv").is_file() and (report / "data" / "stability.csv").is_file()


def test_small_study_banner_and_none_for_a_larger_one(small, larger) -> None:
    html = (small[0] / "index.html").read_text()
    assert 'class="banner"' in html and "n = 5 tokenizers" in html
    big = (larger[0] / "index.html").read_text()
    assert 'class="banner"' not in big


def test_overview_ranks_by_abs_r_from_correlations_csv(larger) -> None:
    report, _ = larger
    corr = pd.read_csv(report / "data" / "correlations.csv")
    html = (report / "index.html").read_text()
    table = html[html.index("<tbody>"):html.index("</tbody>")]
    shown = [float(v.replace("−", "-")) for v in re.findall(r'class="heat"[^>]*>([+\-−][0-9.]+)<', table)]
    assert len(shown) >= 10
    assert [abs(v) for v in shown] == sorted((abs(v) for v in shown), reverse=True)
    # the top proxy's |r| is the largest |PCC| of the primary setting in correlations.csv (rounded)
    prim = corr[(corr["backbone"] == "sit-0") & (corr["cfg_scale"] == 1.0) & (corr["n"] > 0)]
    assert abs(shown[0]) == pytest.approx(prim["pcc"].abs().max(), abs=0.006)


def test_paper_numbers_in_prose_come_from_the_csvs(small) -> None:
    ifid = (small[0] / "ifid.html").read_text()
    assert f"PCC {paper_text('ifid_table3', 'SiTXL_nocfg_PCC', metric='iFID')}, SRCC" in ifid
    index = (small[0] / "index.html").read_text()
    assert paper_text("diffusability_headline", "value", metrics="srss+lnc") in index


def test_seesaw_page_without_drift_says_not_run(small) -> None:
    html = (small[0] / "seesaw.html").read_text()
    for anchor in ("seesaw-fig2", "seesaw-table1", "seesaw-table2", "seesaw-table3", "seesaw-table4", "seesaw-table5"):
        assert f'id="{anchor}"' in html
    assert "Drift measures not run in this study" in html and "no ControlNet pair in this study" in html
    assert "uae-stage4" in html  # the paper's 33 rows, with the de-duplication caveat
    assert "seesaw-scatter-rfid-paper" in html and "seesaw-scatter-rfid-ours" not in html  # paper only
    assert html.count("<tr class=\"paper\">") >= 6 + 2 + 33


def test_seesaw_page_fills_ours_from_drift_columns_and_controlnet(larger) -> None:
    report, _ = larger
    html = (report / "seesaw.html").read_text()
    assert "Drift measures not run" not in html
    assert "seesaw-fig2-ours" in html  # our Fig. 2 heatmap
    assert "12.50" in html and "0.0810" in html  # tok0's controlnet_canny.json (FID, L1)
    assert 'id="seesaw-fig4"' in html and "controlnet-tok0" in html  # Fig. 4 grids as files
    # Figs. 3, 5-9: one scatter grid per metric for the paper's Table 5 and for ours
    assert "seesaw-scatter-psnr-paper" in html and "seesaw-scatter-psnr-ours" in html
    fig2 = pd.read_csv(report / "data" / "seesaw_fig2.csv")
    row = fig2[(fig2["rows"] == "all") & (fig2["x"] == "psnr") & (fig2["y"] == "drift_spatial")].iloc[0]
    assert row["n"] == 24 and f"{row['rho']:+.2f}" in html


def test_tokenizer_card_has_config_images_and_ranks(larger) -> None:
    report, config = larger
    html = (report / card_file("tok3")).read_text()
    assert "img/tok/tok3/interpolation.png" in html and "img/tok/tok3/sit-1-cfg2.png" in html
    assert 'loading="lazy"' in html
    assert re.search(r"#\d+ of 24", html)
    assert "<code>" + config["tokenizers"]["tok3"]["regularizer"] + "</code>" in html


def test_rerender_leaves_no_stale_figures(small) -> None:
    report, config = small
    stale = report / "img" / "stale-00000000.png"
    stale.write_bytes(b"x")
    render_report(report.parent, config, report / "index.html")
    assert not stale.exists() and (report / "img" / "overview-ranked-proxies.png").is_file()


def test_orient_table_one_sign_convention() -> None:
    """r > 0: the metric's better tokenizer has the better target, for either direction of either."""
    import pandas as pd

    from latentbench.report.overview import orient_table

    rows = [  # psnr: higher is better; ifid: lower is better; gfid lower, linear_probe higher
        {"metric": "psnr", "target": "gfid"}, {"metric": "ifid", "target": "gfid"},
        {"metric": "psnr", "target": "linear_probe"}, {"metric": "ifid", "target": "linear_probe"},
    ]
    corr = pd.DataFrame([{**r, "pcc": 0.5, "pcc_lo": 0.2, "pcc_hi": 0.8, "srcc": 0.4, "srcc_lo": 0.1, "srcc_hi": 0.7}
                         for r in rows])
    got = orient_table(corr)
    assert got["r"].tolist() == [-0.5, 0.5, 0.5, -0.5]
    assert got[["r_lo", "r_hi"]].values.tolist() == [[-0.8, -0.2], [0.2, 0.8], [0.2, 0.8], [-0.8, -0.2]]
    assert got["rho"].tolist() == [-0.4, 0.4, 0.4, -0.4]
