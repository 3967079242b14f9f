"""The CLI's output as a script or a pipe gets it (stdout not a terminal), against a real `chainrule
serve`: one line per record with whole ids, a line per epoch (or every K-th), sweeps and landscapes
that report progress as it happens, a readable `jobs show`, the analyses' commands, and a 401 that
says how to log in. Every command is a real subprocess, as in test_client_e2e.py."""
from __future__ import annotations

import json
import re
import subprocess

import pytest

from e2e_support import Stack, blobs_csv, chainrule_cmd

pytestmark = pytest.mark.timeout(180)

LAYERS = [{"type": "linear", "out_features": 16, "init": "he_normal"}, {"type": "relu"},
          {"type": "linear", "out_features": 3}]
JOB = {"model": {"layers": LAYERS}, "loss": "cross_entropy", "optimizer": {"type": "adam", "lr": 0.01},
       "epochs": 60, "batch_size": 64, "validation_split": 0.25, "device": "cpu"}
DIVERGING = {**JOB, "optimizer": {"type": "sgd", "lr": 100.0}, "epochs": 6}   # findings: divergence, ...
BOX = set("│┃━─╇┏┓┗┛╭╮╰╯…")                                                 # rich's tables, bars, ellipses


@pytest.fixture(scope="module")
def stack(tmp_path_factory, request):
    failed_before = request.session.testsfailed
    deployment = Stack(tmp_path_factory.mktemp("cli_output"), webhook_allow_private_targets=True)  # a local receiver
    deployment.create_key_in_process()
    deployment.start_serve()
    try:
        deployment.wait_api(name="serve")
        yield deployment
    finally:
        deployment.close()
        if request.session.testsfailed > failed_before:
            print(deployment.dump_logs())


@pytest.fixture(scope="module")
def dataset(stack) -> dict:
    return stack.upload_csv(blobs_csv(), "blobs")


@pytest.fixture(scope="module")
def trained(stack, dataset) -> dict:
    """A 60-epoch job, submitted and followed with `jobs submit --watch` (the output kept)."""
    (stack.root / "job.json").write_text(json.dumps(JOB))
    out = cli(stack, "jobs", "submit", "job.json", "--dataset", dataset["id"], "--name", "sixty", "--watch")
    job_id = out.stdout.split("submitted job ", 1)[1].split()[0]
    return {"id": job_id, "stdout": out.stdout, "dataset_id": dataset["id"]}


def cli(stack, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    """`chainrule ...` with stdout and stderr pipes (off a terminal), this stack's URL and key."""
    full = {**stack.env, "XDG_CONFIG_HOME": str(stack.root / "config"), "CHAINRULE_URL": stack.api_url,
            "CHAINRULE_API_KEY": stack.key, **env}
    full = {k: v for k, v in full.items() if v is not None}
    proc = subprocess.run(chainrule_cmd() + list(args), env=full, cwd=stack.root, capture_output=True,
                          text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"chainrule {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def scalar(value) -> str:
    """A JSON scalar as the CLI writes it: 4 significant digits, true / false, - for null."""
    if isinstance(value, bool):
        return str(value).lower()
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def leaves(record: dict, prefix: str = ""):
    """(dotted name, value) of every non-dict value in a nested record."""
    for name, value in record.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value


def plain(text: str) -> None:
    """No box drawing, no progress bar remains, no ellipsis where text was cut."""
    assert not BOX & set(text), text


def test_lists_are_one_line_per_record_with_whole_ids(stack, dataset, trained):
    jobs = stack.http.get("/v1/jobs").json()["items"]
    lines = cli(stack, "jobs", "list").stdout.splitlines()
    plain("\n".join(lines))
    assert lines[0] == f"{len(jobs)} job(s)" and lines[1].split() == ["id", "name", "status", "tags", "epoch",
                                                                      "created"]
    assert len(lines) == 2 + len(jobs)
    for line, job in zip(lines[2:], jobs):
        assert line.startswith(job["id"] + "  ") and job["status"] in line.split()
    rows = cli(stack, "datasets", "list").stdout.splitlines()[2:]
    assert [dataset["id"], "blobs", "classification", "600"] in [row.split()[:4] for row in rows], rows


def test_findings_are_one_line_each_with_the_whole_message_and_hint(stack, dataset):
    job = stack.submit(dataset["id"], **DIVERGING)
    stack.wait_job(job["id"], watch=("serve",))
    found = stack.http.get(f"/v1/jobs/{job['id']}/findings").json()["items"]
    assert found, "SGD at lr 100 finds something"
    lines = cli(stack, "jobs", "findings", job["id"]).stdout.splitlines()
    plain("\n".join(lines))
    assert lines[0] == f"job {job['id']}: {len(found)} finding(s)" and len(lines) == 2 + len(found)
    for line, finding in zip(lines[2:], found):
        assert line.split()[:3] == [str(finding["epoch"]), finding["severity"], finding["code"]]
        assert " ".join(finding["message"].split()) in line and line.endswith(" ".join(finding["hint"].split()))


def test_watch_prints_every_epoch_then_whole_final_lines(stack, trained):
    lines = trained["stdout"].splitlines()
    plain(trained["stdout"])
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == [f"{e}/60" for e in range(1, 61)]      # the README's promise
    metrics = stack.http.get(f"/v1/jobs/{trained['id']}/metrics").json()["epochs"]
    assert epochs[-1].split()[2:] == ["train_loss", f"{metrics[-1]['train_loss']:.4g}", "val_loss",
                                      f"{metrics[-1]['val_loss']:.4g}", "val_accuracy",
                                      f"{metrics[-1]['val_accuracy']:.4g}"]
    assert lines[-2].startswith(f"job {trained['id']} succeeded  train_loss ")
    # the hint is the whole command: run as printed, it writes the weights
    hint = lines[-1]
    assert hint == f"weights: chainrule jobs weights {trained['id']} -o {trained['id'][:8]}.safetensors"
    cli(stack, *hint.split()[2:])
    assert (stack.root / f"{trained['id'][:8]}.safetensors").stat().st_size > 0


def test_watch_every_k_prints_every_kth_epoch_and_the_last(stack, trained):
    out = cli(stack, "jobs", "watch", trained["id"], "--every", "7")
    shown = [int(line.split()[1].split("/")[0]) for line in out.stdout.splitlines() if line.startswith("epoch ")]
    assert shown == [7, 14, 21, 28, 35, 42, 49, 56, 60]
    # a job stopped early still ends on its last epoch's line, though --every skipped it
    (stack.root / "early.json").write_text(json.dumps({**JOB, "early_stopping": {"patience": 1, "min_delta": 100}}))
    out = cli(stack, "jobs", "submit", "early.json", "--dataset", trained["dataset_id"], "--watch", "--every", "50")
    last = stack.http.get(f"/v1/jobs/{out.stdout.split()[2].rstrip(':')}/metrics").json()["epochs"][-1]
    assert last["epoch"] < 50
    assert [line.split()[1] for line in out.stdout.splitlines() if line.startswith("epoch ")] == [f"{last['epoch']}/60"]
    assert "--every" in cli(stack, "jobs", "watch", "--help").stdout


def test_jobs_show_reads_as_aligned_lines_and_json_stays_the_api_record(stack, trained):
    out = cli(stack, "jobs", "show", trained["id"]).stdout
    plain(out)
    assert not re.search(r"[{}]|'\w+':", out), out                    # no Python dict repr anywhere
    job = stack.job(trained["id"])
    pairs = dict(line.split(None, 1) for line in out.splitlines() if not line.startswith(" ") and " " in line)
    assert pairs["id"].strip() == job["id"] and pairs["status"].strip() == "succeeded"
    steps = job["progress"]["step"], job["progress"]["total_steps"]
    assert pairs["progress"].strip() == f"epoch 60/60, step {'/'.join(str(n) for n in steps if n)} (100%)"
    assert f"val_loss {job['latest_metrics']['val_loss']:.4g}" in pairs["latest"]
    assert re.search(r"\n  model +0  linear\(out_features=16, bias=true, init=he_normal\)\n +1  relu\n", out), out
    assert re.search(r"\n  optimizer +adam\(lr=0\.01, betas=\(0\.9, 0\.999\)", out), out
    grad_norm = job["latest_metrics"]["layers"]["0"]["grad_norm"]
    assert re.search(rf"\n  0 linear +grad_norm {grad_norm:.4g}, ", out), out
    assert json.loads(cli(stack, "jobs", "show", trained["id"], "--json").stdout) == job


def test_a_401_says_to_log_in_or_set_the_key(stack):
    missing = cli(stack, "jobs", "list", check=False, CHAINRULE_API_KEY=None)
    assert missing.returncode == 1 and "401" in missing.stderr
    assert "chainrule login" in missing.stderr and "CHAINRULE_API_KEY" in missing.stderr
    wrong = cli(stack, "datasets", "list", check=False, CHAINRULE_API_KEY="cr_wrong")
    assert wrong.returncode == 1 and "the key in $CHAINRULE_API_KEY was refused" in wrong.stderr
    assert "chainrule login" in wrong.stderr and "Traceback" not in wrong.stderr


def test_help_names_every_command_group(stack):
    import chainrule.cli as cli_module

    out = cli(stack, "--help").stdout
    about = " ".join(out.split("Options", 1)[0].split())       # the description, unwrapped
    names = [group.name for group in cli_module.app.registered_groups] + \
        [command.name or command.callback.__name__ for command in cli_module.app.registered_commands]
    assert "sweeps" in names
    for name in names:
        assert re.search(rf"\b{name}\b", about.split("Usage:", 1)[1].split("]...", 1)[1]), (name, about)
    jobs_help = cli(stack, "jobs", "--help").stdout
    assert "landscape" in jobs_help and "gradcheck" in jobs_help


def test_sweeps_watch_reports_each_trial_as_it_ends(stack, dataset):
    """Off a terminal the sweep's progress comes line by line while it runs, not at the end."""
    sweep = {"name": "cli lines", "dataset_id": dataset["id"], "method": "grid", "max_concurrent": 1,
             "job": {**JOB, "epochs": 8}, "parameters": {"optimizer.lr": {"choice": [0.001, 0.01, 0.1]}}}
    (stack.root / "sweep.json").write_text(json.dumps(sweep))
    env = {**stack.env, "CHAINRULE_URL": stack.api_url, "CHAINRULE_API_KEY": stack.key}
    proc = subprocess.Popen(chainrule_cmd() + ["sweeps", "submit", "sweep.json", "--watch"], env=env,
                            cwd=stack.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sweep_id = proc.stdout.readline().split("submitted sweep ", 1)[1].split()[0]
        first = proc.stdout.readline()
        assert first.startswith("trial 0 "), first
        # that line came while the sweep still ran (its trials start seconds apart): streamed, not kept
        assert stack.http.get(f"/v1/sweeps/{sweep_id}").json()["status"] == "running"
        rest, err = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest + err
    lines = [first.rstrip("\n")] + rest.splitlines()
    plain("\n".join(lines))
    done = stack.http.get(f"/v1/sweeps/{sweep_id}").json()
    for trial in done["trials"]:
        ended = f"trial {trial['number']} succeeded after 8 epoch(s): val_loss {trial['value']:.4g}  " \
                f"(optimizer.lr {trial['params']['optimizer.lr']:.4g})"
        assert ended in lines, (ended, lines)
    assert any(line.startswith(f"sweep {sweep_id} (cli lines): succeeded, 3/3 trials made") for line in lines)
    assert f"{done['best_trial']['number']} *" in rest


def test_landscape_request_watch_show_and_plot(stack, trained):
    out = cli(stack, "jobs", "landscape", "request", trained["id"], "--set", "samples=128", "--set",
              "iterations=20", "--watch")
    lines = out.stdout.splitlines()
    plain(out.stdout)
    assert re.match(rf"landscape of job {trained['id']}: (queued|running)  \(.*samples 128", lines[0]), lines[0]
    assert f"landscape of job {trained['id']}: succeeded 100%" in lines
    row = stack.http.get(f"/v1/jobs/{trained['id']}/landscape").json()
    assert row["options"]["samples"] == 128 and row["options"]["iterations"] == 20
    # every field of the result, printed as the API sent it, nested ones by dotted name
    shown = dict(line.split(None, 1) for line in lines[lines.index("result") + 1:])
    for name, value in leaves(row["result"]["hessian"], "hessian."):
        assert shown[name] == scalar(value) if not isinstance(value, list) else name in shown, name
    assert shown["line.alphas"] == f"{len(row['result']['line']['alphas'])} values, from -0.5 to 1.5"
    again = cli(stack, "jobs", "landscape", "show", trained["id"]).stdout
    assert "hessian.verdict" in again and re.search(r"(^|\n)status +succeeded\n", again), again
    png = stack.root / "land.png"
    cli(stack, "jobs", "landscape", "plot", trained["id"], "-o", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    density = cli(stack, "jobs", "landscape", "plot", trained["id"], "-k", "spectral_density").stdout
    assert f"wrote {trained['id']}-spectral_density.png (spectral_density, " in density
    assert (stack.root / f"{trained['id']}-spectral_density.png").read_bytes()[:4] == b"\x89PNG"
    bad = cli(stack, "jobs", "landscape", "request", trained["id"], "--set", "points=3", check=False)
    assert bad.returncode == 1 and "422" in bad.stderr and "points" in bad.stderr


def test_gradcheck_of_a_job_file_and_of_a_submitted_job(stack, dataset, trained):
    out = cli(stack, "jobs", "gradcheck", "job.json", "--input-shape", "4", "--set", "batch_size=3", "--set",
              "coordinates=8")          # a check of seconds even on a loaded machine (gradcheck_time_limit_s)
    lines = out.stdout.splitlines()
    plain(out.stdout)
    words = [line.split() for line in lines]
    assert ["passed", "true"] in words and ["batch_size", "3"] in words
    table = lines[lines.index("3 checked") + 2:]                  # two linear layers and the input
    assert [row.split()[:3] for row in table] == [["0", "linear", "passed"], ["2", "linear", "passed"],
                                                  ["input", "-", "passed"]]
    report = json.loads(cli(stack, "jobs", "gradcheck", trained["id"], "--set", "batch_size=2", "--set",
                            "coordinates=4", "--json").stdout)                 # on its dataset's rows
    assert report["passed"] is True and [layer["key"] for layer in report["layers"]] == ["0", "2"]
    (stack.root / "nodata.json").write_text(json.dumps({"model": {"layers": LAYERS}, "loss": "cross_entropy"}))
    missing = cli(stack, "jobs", "gradcheck", "nodata.json", check=False)
    assert missing.returncode == 1 and "--dataset" in missing.stderr and "--input-shape" in missing.stderr


def test_a_sweep_off_a_terminal_is_never_silent_while_epochs_are_trained(stack, dataset, monkeypatch, capsys):
    """Between trial lines a progress line comes at least every PROGRESS_EVERY_S while epochs are trained
    (in process, with the interval at 0 s, so every poll that saw new epochs says so)."""
    from chainrule.commands import sweeps

    made = stack.http.post("/v1/sweeps", json={
        "name": "quiet", "dataset_id": dataset["id"], "method": "grid", "max_concurrent": 1,
        "job": {**JOB, "epochs": 30}, "parameters": {"optimizer.lr": {"choice": [0.001, 0.01]}}}).json()
    monkeypatch.setattr(sweeps, "PROGRESS_EVERY_S", 0.0)
    with stack.client() as client:
        final = sweeps._lines(client, made["id"])
    lines = capsys.readouterr().out.splitlines()
    progress = [int(line.split(" epochs trained")[0].rsplit(" ", 1)[1]) for line in lines
                if line.startswith(f"sweep {made['id']} (quiet): ")]
    # the last is the closing summary; the ones before it came from the polls that saw epochs trained
    # (how many depends on how fast the trials run: at least the poll that saw them end)
    assert len(progress) >= 2 and progress == sorted(progress) and progress[-1] == final["epochs_trained"] == 60, \
        lines


def test_webhooks_from_the_cli_create_list_deliveries_and_delete(stack, dataset):
    """A webhook made with the CLI receives a succeeded job's signed POST; its deliveries and the list read as
    lines; the secret is printed once, at creation."""
    import hashlib
    import hmac

    from e2e_support import wait_for
    from webhook_receiver import Receiver

    with Receiver() as receiver:
        out = cli(stack, "webhooks", "create", receiver.url, "-e", "job.succeeded").stdout
        hook_id = out.split("webhook ", 1)[1].split()[0]
        secret = out.split("secret: ", 1)[1].split()[0]
        assert f"-> {receiver.url} on job.succeeded" in out and len(secret) >= 16
        listed = cli(stack, "webhooks", "list").stdout
        assert hook_id in listed and secret not in listed and "1 webhook(s)" in listed
        job = stack.submit(dataset["id"], epochs=1)
        assert stack.wait_job(job["id"], timeout=120, watch=("serve",))["status"] == "succeeded"
        wait_for(lambda: receiver.requests or None, 120, 0.1, "the webhook's POST")
        sent = receiver.requests[0]
        stamp, signature = (part.split("=", 1)[1] for part in sent.headers["Chainrule-Signature"].split(","))
        expected = hmac.new(secret.encode(), f"{stamp}.".encode() + sent.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(signature, expected) and job["id"].encode() in sent.body
        line = wait_for(lambda: next((ln for ln in cli(stack, "webhooks", "deliveries", hook_id).stdout.splitlines()
                                      if "delivered" in ln), None), 60, 0.2, "the delivery logged as delivered")
        assert sent.headers["Chainrule-Delivery"] in line and "job.succeeded" in line and " 200 " in f" {line} "
    assert f"deleted webhook {hook_id}" in cli(stack, "webhooks", "delete", hook_id).stdout
    assert "0 webhook(s)" in cli(stack, "webhooks", "list").stdout
    gone = cli(stack, "webhooks", "deliveries", hook_id, check=False)
    assert gone.returncode == 1 and "404" in gone.stderr
