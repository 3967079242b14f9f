"""The CLI and the Python client as a user drives them: against a real `chainrule serve` (embedded:
SQLite and the server-less broker) and against `chainrule api` + `worker` on PostgreSQL + Redis.
Nothing is mocked: real processes, real HTTP, real training."""
from __future__ import annotations

import json
import subprocess

import httpx
import pytest
import safetensors.torch
import torch
from httpx_sse import connect_sse

from chainrule.client import ApiError, WaitTimeout
from e2e_support import CEILING_S, HANG_GUARD_S, blobs_csv, chainrule_cmd

pytestmark = pytest.mark.timeout(HANG_GUARD_S)

LAYERS = [{"type": "linear", "out_features": 16}, {"type": "relu"}, {"type": "linear", "out_features": 3}]
JOB = {"model": {"layers": LAYERS}, "loss": "cross_entropy", "optimizer": {"type": "adam", "lr": 0.01},
       "epochs": 6, "batch_size": 32, "validation_split": 0.25, "device": "cpu"}
LONG = {**JOB, "epochs": 3000, "batch_size": 64}   # busy for minutes unless cancelled


def cli(stack, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    """`chainrule ...` as a subprocess, with this test's own client config file."""
    full = {**stack.env, "XDG_CONFIG_HOME": str(stack.root / "config"), **env}
    proc = subprocess.run(chainrule_cmd() + list(args), env=full, cwd=stack.root, capture_output=True,
                          text=True, timeout=CEILING_S)
    if check and proc.returncode != 0:
        raise AssertionError(f"chainrule {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def served(stack_factory):
    stack = stack_factory("sqlite")
    stack.create_key_in_process()
    stack.start_serve()
    stack.wait_api(name="serve")
    return stack


def test_cli_walkthrough_against_chainrule_serve(stack_factory, tmp_path):
    stack = served(stack_factory)
    (stack.root / "blobs.csv").write_bytes(blobs_csv())
    (stack.root / "job.json").write_text(json.dumps(JOB))
    # login checks the key, then later commands need neither --url nor --key
    bad = cli(stack, "login", "--url", stack.api_url, "--key", "cr_wrong", check=False)
    assert bad.returncode == 1 and "401" in bad.stderr and "invalid API key" in bad.stderr
    cli(stack, "login", "--url", stack.api_url, "--key", stack.key)
    dataset = json.loads(cli(stack, "datasets", "upload", "blobs.csv", "--name", "blobs", "--json").stdout)
    assert dataset["task"] == "classification" and dataset["task_inferred"] is True

    run = cli(stack, "jobs", "submit", "job.json", "--dataset", dataset["id"], "--name", "blobs-mlp",
              "--tag", "walkthrough", "--tag", "cli", "--watch")
    assert "epoch 6/6" in run.stdout and "val_accuracy" in run.stdout and "succeeded" in run.stdout
    epoch_lines = [line for line in run.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == [f"{e}/6" for e in range(1, 7)]
    # each line whole, as a script reads it (a console not on a terminal is 80 columns: no hard wraps)
    assert all("val_accuracy" in line for line in epoch_lines)
    done = next(line for line in run.stdout.splitlines() if line.startswith("job ") and "succeeded" in line)
    assert "train_loss" in done and "val_accuracy" in done and len(done) > 80

    listed = json.loads(cli(stack, "jobs", "list", "--tag", "cli", "--json").stdout)
    assert listed["total"] == 1 and listed["items"][0]["name"] == "blobs-mlp"
    job_id = listed["items"][0]["id"]
    assert set(listed["items"][0]["tags"]) == {"walkthrough", "cli"}
    assert json.loads(cli(stack, "jobs", "list", "--tag", "other", "--json").stdout)["total"] == 0
    metrics = json.loads(cli(stack, "jobs", "metrics", job_id, "--json").stdout)
    assert [m["epoch"] for m in metrics] == list(range(1, 7))

    cli(stack, "jobs", "weights", job_id, "-o", "w.safetensors")
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    net.load_state_dict(safetensors.torch.load_file(stack.root / "w.safetensors"), strict=True)
    (stack.root / "rows.csv").write_text("x0,x1,x2,x3\n0.5,1.0,-0.2,2.0\n1,2,3,4\n")
    predicted = json.loads(cli(stack, "jobs", "predict", job_id, "--inputs", "rows.csv", "--json").stdout)
    expected = net(torch.tensor([[0.5, 1.0, -0.2, 2.0], [1, 2, 3, 4]])).detach()
    assert torch.allclose(torch.tensor(predicted["outputs"]), expected, atol=1e-4)
    assert set(predicted["classes"]) <= {"alpha", "beta", "gamma"}
    # a CSV's header names its columns: matched to the features by name, and the target left in is named
    (stack.root / "named.csv").write_text("x3,x0,x1,x2\n2.0,0.5,1.0,-0.2\n4,1,2,3\n")
    assert json.loads(cli(stack, "jobs", "predict", job_id, "--inputs", "named.csv", "--json").stdout) == predicted
    (stack.root / "train.csv").write_text("x0,x1,x2,x3,label\n0.5,1.0,-0.2,2.0,alpha\n")
    refused = cli(stack, "jobs", "predict", job_id, "--inputs", "train.csv", check=False)
    assert refused.returncode == 1 and "'label' is the dataset's target column" in refused.stderr, refused.stderr
    assert "['x0', 'x1', 'x2', 'x3']" in refused.stderr

    # an API error is one line with the API's message and a non-zero exit, no traceback
    gone = cli(stack, "jobs", "show", "00000000-0000-4000-8000-000000000000", check=False)
    assert gone.returncode == 1 and "404" in gone.stderr and "Traceback" not in gone.stderr
    cli(stack, "jobs", "delete", job_id)


def test_watch_exits_non_zero_with_the_reason_on_failed_and_cancelled(stack_factory):
    stack = served(stack_factory)
    client = stack.client()
    env = {"CHAINRULE_URL": stack.api_url, "CHAINRULE_API_KEY": stack.key}
    dataset = stack.upload_csv(blobs_csv())
    # a dataset whose stored file is lost fails its job with a reason
    stored = stack.data_dir / "artifacts" / "datasets" / f"{dataset['id']}.safetensors"
    assert stored.exists()
    stored.unlink()
    failing = client.submit(JOB, dataset_id=dataset["id"])
    out = cli(stack, "jobs", "watch", failing["id"], check=False, **env)
    assert out.returncode == 1 and "failed" in out.stderr and "dataset_missing" in out.stderr, out.stderr

    dataset = stack.upload_csv(blobs_csv())
    long = client.submit(LONG, dataset_id=dataset["id"])
    watcher = subprocess.Popen(chainrule_cmd() + ["jobs", "watch", long["id"]], env={**stack.env, **env},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with pytest.raises(WaitTimeout):
        client.wait(long["id"], timeout=1.0)
    client.cancel(long["id"])
    _, err = watcher.communicate(timeout=CEILING_S)
    assert watcher.returncode == 3 and "cancelled" in err


@pytest.mark.parametrize("backend", [
    "sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.redis])])
def test_events_stream_a_whole_job_in_order_and_resume_after_a_drop(stack_factory, backend):
    stack = stack_factory(backend)
    stack.up()
    client = stack.client()
    dataset = client.upload_dataset(_write(stack.root / "blobs.csv", blobs_csv()), name="blobs")
    job = client.submit({**JOB, "epochs": 12}, dataset_id=dataset["id"], tags=["events"])

    # the first connection drops after two epochs; the client resumes from the last id it saw
    seen = []
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.key}"},
                      timeout=CEILING_S) as http:       # httpx's 5 s read timeout: an epoch on a loaded machine
        with connect_sse(http, "GET", f"/v1/jobs/{job['id']}/events") as source:
            for sse in source.iter_sse():
                seen.append((sse.event, json.loads(sse.data), sse.id))
                if sum(kind == "epoch" for kind, _, _ in seen) == 2:
                    break
    events = [(kind, data) for kind, data, _ in seen]
    events += [(e.kind, e.data) for e in client.watch(job["id"], last_event_id=seen[-1][2])]

    epochs = [data["epoch"] for kind, data in events if kind == "epoch"]
    assert epochs == list(range(1, 13))
    fractions = [data["fraction"] for kind, data in events if kind == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    statuses = [data["status"] for kind, data in events if kind == "status"]
    assert statuses[-1] == "succeeded" and events[-1][0] == "status"
    assert statuses == list(dict.fromkeys(statuses))          # each status once, in order
    assert client.metrics(job["id"]) == [data for kind, data in events if kind == "epoch"]
    with pytest.raises(ApiError) as err:
        list(stack.client().watch("00000000-0000-4000-8000-000000000000"))
    assert err.value.status == 404 and "not found" in err.value.message


def _write(path, content: bytes):
    path.write_bytes(content)
    return path


def test_cli_text_walkthrough_a_gpt_on_a_text_and_its_generation(stack_factory):
    """The README's text flow: upload a .txt (char tokenizer), submit a GPT job, watch it, generate."""
    from sequence_support import gpt
    stack = served(stack_factory)
    (stack.root / "text.txt").write_text("Nothing is so good as it seems beforehand. " * 30)
    cli(stack, "login", "--url", stack.api_url, "--key", stack.key)
    up = cli(stack, "datasets", "upload", "text.txt", "--tokenizer", "char")
    assert "1,290 tokens, char tokenizer, vocabulary 17" in up.stdout
    dataset = json.loads(cli(stack, "datasets", "list", "--json").stdout)["items"][0]
    job = {"model": gpt(vocab=17, dim=16, context=16, blocks=1, init_std=0.02), "context_length": 16,
           "loss": "cross_entropy", "optimizer": {"type": "adamw", "lr": 0.01}, "epochs": 3, "batch_size": 8,
           "steps_per_epoch": 20, "validation_split": 0.1}
    (stack.root / "gpt.json").write_text(json.dumps(job))
    run = cli(stack, "jobs", "submit", "gpt.json", "--dataset", dataset["id"], "--watch")
    assert "epoch 3/3" in run.stdout and "succeeded" in run.stdout
    job_id = run.stdout.split("submitted job ")[1].split()[0].rstrip(":")
    text = cli(stack, "jobs", "generate", job_id, "--prompt", "Nothing", "-n", "30", "--temperature", "0").stdout
    assert text.startswith("Nothing") and len(text.rstrip("\n")) == len("Nothing") + 30
    again = json.loads(cli(stack, "jobs", "generate", job_id, "-p", "Nothing", "-n", "30", "--temperature", "0",
                           "--json").stdout)
    assert again["text"] == text.rstrip("\n") and again["prompt_tokens"] == 7
