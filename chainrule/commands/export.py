"""`chainrule jobs export JOB --format onnx` and `chainrule jobs script JOB`: leaving with the model."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import Key, Url, connect, console

JobId = Annotated[str, typer.Argument(help="The job's id.")]


class Format(str, Enum):
    onnx = "onnx"
    safetensors = "safetensors"


def export(job_id: JobId,
           format: Annotated[Format, typer.Option("--format", "-f", help=(
               "onnx: the network as an ONNX graph (float32, a dynamic batch); safetensors: the weights."))]
           = Format.onnx,
           output: Annotated[Optional[Path], typer.Option("-o", "--output", help=(
               "Where to write it. Default: JOB_ID.onnx (or .safetensors) here."))] = None,
           url: Url = None, key: Key = None) -> None:
    """Download a succeeded job's trained network, as ONNX for a deployment runtime, or its weights."""
    path = output or Path(f"{job_id}.{format.value}")
    with connect(url, key) as client:
        path = client.export_onnx(job_id, path) if format is Format.onnx else client.download_weights(job_id, path)
    console.print(f"wrote {path} ({path.stat().st_size:,} bytes)", highlight=False)


def script(job_id: JobId,
           output: Annotated[Optional[Path], typer.Option("-o", "--output", help=(
               "Where to write the script. Default: job_JOB_ID.py here."))] = None,
           dataset: Annotated[Optional[Path], typer.Option("--dataset", help=(
               "Also download the job's dataset file (.safetensors) here, which the script reads."))] = None,
           url: Url = None, key: Key = None) -> None:
    """Download the job as one plain PyTorch script that trains it again (torch and safetensors only)."""
    path = output or Path(f"job_{job_id}.py")
    with connect(url, key) as client:
        client.download_script(job_id, path)
        if dataset is not None:
            dataset_id = client.get(job_id)["request"]["dataset_id"]
            client.download_dataset(dataset_id, dataset)
    console.print(f"wrote {path}; run: python {path} {dataset or 'DATASET.safetensors'}", highlight=False)
