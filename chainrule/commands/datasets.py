"""`chainrule datasets upload|list|show|delete`."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import AsJson, Key, Url, connect, console, fields, print_json, table

app = typer.Typer(no_args_is_help=True, help="Upload and manage training data (CSV or NPZ).")
COLUMNS = [("id", "id"), ("name", "name"), ("task", "task"), ("n_rows", "rows"), ("input_shape", "input"),
           ("n_outputs", "outputs"), ("created_at", "created")]
DETAILS = ["id", "name", "format", "kind", "task", "task_reason", "n_rows", "input_shape", "n_outputs", "classes",
           "target", "feature_names", "tokenizer", "vocab_size", "n_tokens", "size_bytes", "created_at"]


class Tokenizer(str, Enum):
    byte = "byte"
    char = "char"


class TaskChoice(str, Enum):
    infer = "infer"
    classification = "classification"
    regression = "regression"


@app.command()
def upload(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                                help="A CSV with a header row, or an NPZ with arrays X and y.")],
           name: Annotated[Optional[str], typer.Option(help="Default: the file name.")] = None,
           target: Annotated[Optional[str], typer.Option(help="CSV target column. Default: the last.")] = None,
           task: Annotated[TaskChoice, typer.Option(help="infer: from the target (the server says why).")]
           = TaskChoice.infer,
           tokenizer: Annotated[Optional[Tokenizer], typer.Option(help=(
               "Text: byte (256 ids) or char (the text's own characters). Default: byte."))] = None,
           text_column: Annotated[Optional[str], typer.Option(help=(
               "CSV of texts and labels: the column holding the texts (sequence classification)."))] = None,
           max_length: Annotated[Optional[int], typer.Option(min=1, help=(
               "With --text-column: tokens per row, padded or cut."))] = None,
           url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Upload a dataset (CSV, NPZ, or a UTF-8 .txt for a language model); prints its id and its task, and why."""
    with connect(url, key) as client:
        dataset = client.upload_dataset(file, name=name, target=target,
                                        task=None if task is TaskChoice.infer else task.value,
                                        tokenizer=tokenizer.value if tokenizer else None, text_column=text_column,
                                        max_length=max_length)
    if as_json:
        return print_json(dataset)
    if dataset.get("kind") == "language_model":
        console.print(f"uploaded [bold]{dataset['name']}[/]: {dataset['n_tokens']:,} tokens, "
                      f"{dataset['tokenizer']['kind']} tokenizer, vocabulary {dataset['vocab_size']}", highlight=False)
    else:
        console.print(f"uploaded [bold]{dataset['name']}[/]: {dataset['n_rows']} rows, input "
                      f"{dataset['input_shape']}, {dataset['task']} with {dataset['n_outputs']} output(s)",
                      highlight=False)
    console.print(f"task: {dataset['task_reason']}", highlight=False, soft_wrap=True)
    console.print(f"id: [bold]{dataset['id']}[/]", highlight=False)


@app.command("list")
def list_(limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
          offset: Annotated[int, typer.Option(min=0)] = 0,
          url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """This key's datasets, newest first."""
    with connect(url, key) as client:
        page = client.list_datasets(limit=limit, offset=offset)
    if as_json:
        return print_json(page)
    table(page["items"], COLUMNS, title=f"{page['total']} dataset(s)")


@app.command()
def show(dataset_id: str, url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """One dataset."""
    with connect(url, key) as client:
        dataset = client.get_dataset(dataset_id)
    print_json(dataset) if as_json else fields(dataset, DETAILS)


@app.command()
def delete(dataset_id: str, url: Url = None, key: Key = None) -> None:
    """Delete a dataset and its file."""
    with connect(url, key) as client:
        client.delete_dataset(dataset_id)
    console.print(f"deleted dataset {dataset_id}", highlight=False)
