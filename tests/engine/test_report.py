import pytest

from multissl.errors import UserError
from multissl.report import groups, main, plot_metrics, read_rows, report


def test_report_of_a_byol_and_a_vicreg_run_writes_labelled_plots_and_one_page(tiny, tmp_path):
    runs = [tiny.run(f"objective={o}", "trainer.max_steps=2", "trainer.log_every=1", "trainer.eval_every=1", name=o)
            for o in ("byol", "vicreg")]
    out = report(runs, tmp_path / "report")
    for name in ("loss", "heldout", "ranks", "duality", "spectrum"):
        assert (out / f"{name}.png").stat().st_size > 1000, name
    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 5  # self-contained: the plots are inline

    rows = {r.name: read_rows(r) for r in runs}
    byol_keys, vicreg_keys = groups(rows["byol"]), groups(rows["vicreg"])
    assert "byol/cos" in byol_keys["loss"] and {"vicreg/inv", "vicreg/var", "vicreg/cov"} <= set(vicreg_keys["loss"])
    assert {"rdm/erank_online", "rdm/diff", "erank_proj"} <= set(byol_keys["ranks"])
    assert "rdm/diff" not in vicreg_keys["ranks"] and "knn_acc" in vicreg_keys["heldout"]
    keys = byol_keys["ranks"]
    fig = plot_metrics(rows, keys, "ranks")
    assert [ax.get_ylabel() for ax in fig.axes] == keys and all(ax.get_xlabel() == "step" for ax in fig.axes)
    # several runs overlaid: a panel both runs logged has a line per run
    panel = fig.axes[keys.index("rankme")]
    assert sorted(line.get_label() for line in panel.get_lines()) == ["byol", "vicreg"]

    main([str(runs[0]), "--out", str(tmp_path / "cli")])  # the entry point's arguments
    assert (tmp_path / "cli" / "index.html").is_file()


def test_report_of_a_folder_without_metrics_is_one_line(tmp_path):
    with pytest.raises(UserError, match="no metrics.jsonl"):
        report([tmp_path])
