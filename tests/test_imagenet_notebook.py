"""The ImageNet notebook: torchrun launched by a papermill-run notebook, records read back."""

import jupytext
import nbformat
import papermill
import pytest
from test_engine_imagenet import make_imagefolder

from ckd_lib import results
from ckd_lib.study.paths import notebooks_dir
from ckd_lib.study.plan import StudyError
from ckd_lib.study.torchrun import folder_pairs


def test_pairs_come_from_the_recipes():
    assert folder_pairs("imagenet") == [("ResNet34", "ResNet18"), ("ResNet50", "MobileNetV1")]
    with pytest.raises(StudyError, match="no imagenet recipes for"):
        folder_pairs("imagenet", ["ResNet101->ResNet18"])


@pytest.mark.notebooks
def test_imagenet_notebook_runs_torchrun_and_reads_records(tmp_path):
    data = make_imagefolder(tmp_path / "data")
    notebook = jupytext.read(notebooks_dir() / "70_imagenet.py")
    notebook.metadata["kernelspec"] = {"name": "python3", "language": "python",
                                       "display_name": "Python 3"}
    source = tmp_path / "70_imagenet.ipynb"
    nbformat.write(notebook, source)
    executed = tmp_path / "executed.ipynb"
    papermill.execute_notebook(
        str(source), str(executed), kernel_name="python3", progress_bar=False,
        parameters={"profile": "imagenet_demo", "results_dir": str(tmp_path / "results"),
                    "data_root": str(data), "pairs": ["ResNet34->ResNet18"], "methods": ["CKD"],
                    "epoch_scale": 0.005, "batch_size": 4, "num_workers": 1,
                    "teacher_checkpoint": "untrained", "device": "cpu", "nproc_per_node": 1})
    records = results.load_records(tmp_path / "results" / "imagenet_demo" / "runs")
    assert len(records) == 1
    record = records[0]
    assert record["config"]["dataset"] == "imagenet" and record["epochs_done"] == 1
    assert record["distributed"]["world_size"] == 1
    text = executed.read_text()
    assert "NOT THE PAPER'S SETTING" in text and record["run_id"] in text
