"""Report outputs: paper tables (LaTeX compiles, numbers equal retrieval.csv's), figures
(SVG and PNG, identical bytes on a rerun), absent products hide their sections, a new
section is one registered function, and classify's confusion matrix equals scikit-learn's."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import report_fixture
from rsm_eval import classify, report
from rsm_eval.report import latex, sections

EXPECTED_FIGURES = {
    "recall_at_k_rsitmd",
    "recall_at_k_ucm",
    "recall_at_k_rsitmd_skyscript",
    "mean_recall_heatmap",
    "published_vs_reproduced_zero-shot",
    "published_vs_reproduced_ret3",
    "paired_differences",
    "finetune_rsm-l14_rsitmd",
    "finetune_rsm-l14_ucm",
    "classification_per_class_rsitmd",
    "confusion_openai-b32_rsitmd",
    "confusion_rsm-b32_rsitmd",
    "confusion_rsm-l14_rsitmd",
}


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return out, report_fixture.render(out)


def test_every_figure_in_svg_and_png_and_in_the_page(full):
    out, paths = full
    names = {p.stem for p in (out / "figures").glob("*.svg")}
    assert names == EXPECTED_FIGURES
    assert {p.stem for p in (out / "figures").glob("*.png")} == EXPECTED_FIGURES
    page = paths["html"].read_text()
    for name in EXPECTED_FIGURES:
        assert f'id="fig-{name}"' in page
        assert f"figures/{name}.svg" in paths["md"].read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//|url\(\s*['\"]?https?:", page)  # no fetch
    assert page.count("<svg") == len(EXPECTED_FIGURES)


def test_rerun_writes_identical_bytes(full, tmp_path):
    out, _ = full
    report_fixture.render(tmp_path)
    for sub in ("figures", "tables"):
        for p in sorted((out / sub).iterdir()):
            assert (tmp_path / sub / p.name).read_bytes() == p.read_bytes(), p.name
    assert (tmp_path / "report.html").read_text() == (out / "report.html").read_text()


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+\.\d\d", text)]


def test_table_numbers_equal_retrieval_csv(full):
    out, paths = full
    rows = list(csv.DictReader(paths["csv"].open()))
    by = {(r["model"], r["dataset"], r["protocol"]): r for r in rows}
    md = (out / "tables/retrieval_ucm.md").read_text().splitlines()
    body = [line for line in md if line.startswith("| ") and not line.startswith("| Model")]
    assert len(body) == 3
    for line in body:
        model = line.split("|")[1].strip()
        row = by[(model, "ucm", "remoteclip")]
        assert _numbers(line) == [float(row[m]) for m in report.METRICS], model
    # The LaTeX and the interval variant carry the same values (and the intervals' ends).
    tex = (out / "tables/table1_zero_shot.tex").read_text()
    line = next(x for x in tex.splitlines() if x.startswith("openai-b32"))
    want = [float(by[("openai-b32", d, "remoteclip")][m]) for d in ("rsitmd", "ucm")
            for m in ("i2t_r1", "t2i_r1", "mean_recall")]  # fmt: skip
    assert _numbers(line) == want
    ci = (out / "tables/retrieval_rsitmd_ci.md").read_text()
    r = by[("rsm-l14", "rsitmd", "remoteclip")]
    assert f"**{r['mean_recall']}** [{r['mean_recall_ci_low']}, {r['mean_recall_ci_high']}]" in ci
    # Best per column in bold; a wide tie interval is marked.
    assert r"\textbf{" in tex and "$^{\\dagger}$" in tex


def test_paper_layouts_keep_zero_shot_and_fine_tuned_apart(full):
    out, _ = full
    t1 = (out / "tables/table1_zero_shot.md").read_text()
    t2 = (out / "tables/table2_fine_tuned.md").read_text()
    assert "openai-b32" in t1 and "rsm-b32" not in t1
    assert "*ViT-B-32*" in t2 and "*ViT-L-14*" in t2 and "openai-b32" not in t2
    # SkyScript rows never enter the papers' layouts; they get their own labelled table.
    assert "SkyScript protocol" in (out / "tables/retrieval_rsitmd_skyscript.md").read_text()
    assert "skyscript" not in t1


def test_latex_tables_compile(full, tmp_path):
    out, _ = full
    texs = sorted((out / "tables").glob("*.tex"))
    assert len(texs) == 12
    for p in texs:
        latex.check_tex(p.read_text())
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        if os.environ.get("CI") == "true":
            pytest.fail("pdflatex missing under CI (.ci/run installs texlive-latex-recommended)")
        pytest.skip("pdflatex not installed; the structural check passed")
    body = "".join(f"\\input{{{p}}}\n\\clearpage\n" for p in texs)
    doc = tmp_path / "tables.tex"
    doc.write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[margin=1cm,"
        "landscape]{geometry}\n\\begin{document}\n" + body + "\\end{document}\n"
    )
    proc = subprocess.run(
        [pdflatex, "-interaction=nonstopmode", "-halt-on-error", doc.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "tables.pdf").stat().st_size > 1000


def test_check_tex_catches_a_broken_table():
    t = latex.PaperTable("t", "c", [("g", ["a", "b"])], [("", [("m", [latex.Cell(1.0)] * 2)])])
    latex.check_tex(latex.render_tex(t))
    with pytest.raises(ValueError, match="cells"):
        latex.check_tex(
            latex.render_tex(t).replace(r"\textbf{1.00} & \textbf{1.00}", r"\textbf{1.00}")
        )
    with pytest.raises(ValueError, match="unbalanced"):
        latex.check_tex(latex.render_tex(t).replace(r"\textbf{1.00}", r"\textbf{1.00"))


def test_names_are_escaped_in_latex(tmp_path):
    recs = [report_fixture.record("a_b & 50%", "rsitmd", 0.0)]
    report.render(recs, [], tmp_path, tmp_path)
    tex = (tmp_path / "tables/retrieval_rsitmd.tex").read_text()
    assert r"a\_b \& 50\%" in tex
    latex.check_tex(tex)


def test_absent_products_hide_their_sections(tmp_path):
    recs = report_fixture.records()
    for r in recs:
        r.pop("tie_interval")
        r.pop("ci")
    paths = report.render(recs, [], tmp_path, tmp_path)
    page = paths["html"].read_text()
    for title in ("Fine-tuning", "Leakage audit", "Zero-shot classification", "Datasets"):
        assert f"<h2>{title}</h2>" not in page
    for title in ("Retrieval", "Paper tables", "Statistics", "Provenance"):
        assert f"<h2>{title}</h2>" in page
    names = {p.stem for p in (tmp_path / "figures").glob("*.svg")}
    assert names == {"recall_at_k_rsitmd", "recall_at_k_ucm", "recall_at_k_rsitmd_skyscript",
                     "mean_recall_heatmap"}  # fmt: skip
    # A rerun with more products, then fewer again: no stale figure stays behind.
    report_fixture.render(tmp_path)
    report.render(recs, [], tmp_path, tmp_path)
    assert {p.stem for p in (tmp_path / "figures").glob("*.svg")} == names


def test_a_new_section_is_one_registered_function(tmp_path, monkeypatch):
    def localization(rep, out):
        heat = rep.products.get("heatmaps")
        if not heat:
            return None
        return report.Section("Semantic localization", f"{len(heat)} maps", "<p>maps</p>")

    order = list(sections.SECTIONS)
    order.insert(order.index(sections.datasets), localization)
    monkeypatch.setattr(sections, "SECTIONS", order)
    page = report.render(report_fixture.records(), [], tmp_path, tmp_path)["html"].read_text()
    assert "Semantic localization" not in page  # its products are absent
    page = report.render(report_fixture.records(), [], tmp_path, tmp_path, heatmaps=["a.png"])[
        "html"
    ].read_text()
    assert page.index("<h2>Semantic localization</h2>") < page.index("<h2>Provenance</h2>")
    assert 'href="#s-semantic-localization"' in page


def test_provenance_is_folded_and_contents_list_every_section(full):
    _, paths = full
    page = paths["html"].read_text()
    prov = page[page.index("<h2>Provenance</h2>") :]
    assert prov.startswith("<h2>Provenance</h2><details>")
    titles = re.findall(r"<section id=\"([^\"]+)\"><h2>", page)
    assert titles and all(f'href="#{t}"' in page for t in titles)


def test_classify_confusion_matrix_equals_scikit_learn():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(0)
    n, n_classes, d = 60, 4, 8
    img = rng.normal(size=(n, d))
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt = rng.normal(size=(2 * n_classes, d))
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    labels = rng.integers(-1, n_classes, size=n)
    got = classify.zero_shot(img, txt, n_classes, labels)
    keep = labels >= 0
    w = txt.reshape(n_classes, 2, d).mean(axis=1)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    pred = (img[keep] @ w.T).argmax(axis=1)
    want = confusion_matrix(labels[keep], pred, labels=range(n_classes))
    assert np.array_equal(np.asarray(got["confusion"]), want)
    assert np.trace(want) / keep.sum() * 100 == pytest.approx(got["top1"])
