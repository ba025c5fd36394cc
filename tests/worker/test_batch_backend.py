"""The ``anthropic-batch`` backend: the real SDK's Message Batches calls against
``scripts/fake_anthropic.py``, in real ``phase5 worker`` processes.

A whole orchestrator's requests go as one batch per round; a worker killed while its batch is
processing re-attaches to it (one create for that round); expired and errored results are sent
again or dropped; the cost report sums to the usage the server returned, at the batch price; the
budget guard stops with exit status 4 and everything resumable.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import anthropic
import pytest

from tests import helpers
from tests.helpers import assert_complete, wait_for
from tests.worker.conftest import KEY
from worker.cost import PriceTable, course_spend
from worker.course import Course
from worker.generators import GeneratorOptions, make_generator
from worker.generators.base import GenerationError, Usage
from worker.generators.batch_backend import BatchGenerator
from worker.paths import CourseLayout
from worker.plan import load_plan, load_plans, prepare
from worker.report import basket_problems

MODEL = "claude-sonnet-5"
AGENTS = 4
# The d windows question has its own tests (test_window_fill.py): here one round when nothing fails.
FAST = ["--poll-interval", "0.05", "--model", MODEL, "--d-windows", "leave"]


@pytest.fixture
def course(demo_course: Path) -> Course:
    loaded = Course.load(demo_course)
    prepare(loaded, segments=1, orchestrators=1, agents=AGENTS)
    return loaded


def start_worker(course: Course, procs: list, *extra: str) -> subprocess.Popen:
    return helpers.start_worker(course, "--backend", "anthropic-batch", *FAST, *extra, procs=procs)


def finish(proc: subprocess.Popen, timeout: float = 90) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def ops(server, op: str) -> list[dict]:
    return [r for r in server.requests() if r.get("op") == op]


def _usage(record: dict) -> Usage:
    usage = Usage.from_json(record["usage"])
    usage.cache_creation_1h_input_tokens = record["usage"].get("cache_creation", {}).get("ephemeral_1h_input_tokens", 0)
    return usage


def server_usage(server) -> Usage:
    """What the server reported for the batches' requests."""
    total = Usage()
    for record in ops(server, "batch_request"):
        if record.get("result") == "succeeded":
            total = total + _usage(record)
    return total


def message_usage(server) -> Usage:
    """What the server reported for Messages requests (the warm-ups)."""
    total = Usage()
    for record in ops(server, "message"):
        if record.get("status") == 200:
            total = total + _usage(record)
    return total


def progress(course: Course) -> dict:
    return json.loads(CourseLayout(course.root).orch_progress(1, 1).read_text())


# -- the fake server's Batches API, with the real SDK ----------------------------------------------


def test_fake_server_speaks_the_batches_api(api, course: Course) -> None:
    server = api(
        "--batch-delay",
        "0.3",
        "--fault-first",
        "batch_ok:1",
        "--fault-first",
        "batch_expired:1",
        "--fault-first",
        "batch_errored:1",
    )
    generator = BatchGenerator(course, GeneratorOptions(model=MODEL))
    client = anthropic.Anthropic(api_key=KEY)
    try:
        ids = course.ids[3:7]
        requests = [{"custom_id": i, "params": generator.conversation(course.context(i), 4).params()} for i in ids]
        batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        assert batch.processing_status == "in_progress" and batch.request_counts.processing == 4
        assert batch.results_url is None
        batch_id = batch.id
        batch = wait_for(
            lambda: (b := client.messages.batches.retrieve(batch_id)).processing_status == "ended" and b,
            timeout=20,
            what="the batch to end",
        )
        counts = batch.request_counts
        assert (counts.succeeded, counts.expired, counts.errored, counts.processing) == (2, 1, 1, 0)
        results = {line.custom_id: line.result for line in client.messages.batches.results(batch.id)}
        assert set(results) == set(ids)
        kinds = [results[i].type for i in ids]  # answered in the order sent
        assert kinds == ["succeeded", "expired", "errored", "succeeded"]
        assert results[ids[2]].error.error.type == "api_error"  # type: ignore[union-attr]
        message = results[ids[0]].message  # type: ignore[union-attr]
        assert [b.type for b in message.content] == ["thinking", "text"]  # structured output, thinking first
        assert message.usage.cache_creation_input_tokens > 0
        assert results[ids[3]].message.usage.cache_read_input_tokens > 0  # type: ignore[union-attr]

        canceled = client.messages.batches.create(requests=requests[:2])  # type: ignore[arg-type]
        assert client.messages.batches.cancel(canceled.id).processing_status == "canceling"
        ended = client.messages.batches.retrieve(canceled.id)
        assert ended.processing_status == "ended" and ended.request_counts.canceled == 2
        assert {line.result.type for line in client.messages.batches.results(canceled.id)} == {"canceled"}

        with pytest.raises(anthropic.NotFoundError):
            client.messages.batches.retrieve("msgbatch_fake_999999")
        with pytest.raises(anthropic.BadRequestError):
            client.messages.batches.create(requests=[requests[0], requests[0]])  # type: ignore[arg-type]
    finally:
        client.close()
        generator.close()
    assert [r["status"] for r in ops(server, "batch_create")] == [200, 200, 400]  # the refused one logged too
    assert ops(server, "batch_retrieve") and ops(server, "batch_results") and ops(server, "batch_cancel")


# -- a whole orchestrator through batches ---------------------------------------------------------------


def test_full_run_one_batch_per_round_valid_and_priced(api, course: Course, procs: list) -> None:
    server = api("--batch-delay", "0.2", "--fault", "future:0.2", "--seed", "5")
    code, out, err = finish(start_worker(course, procs))
    assert code == 0, err
    assert_complete(course)
    creates = [r for r in ops(server, "batch_create") if r["status"] == 200]
    first = creates[0]
    # Before the first batch, one warm-up request per agent prefix through the Messages API wrote
    # the prefix with the 1-hour TTL; the batch holds every other LEGO but #1 (no request needed).
    plan = load_plan(course, 1).orchestrator(1)
    warm_ups = [r for r in ops(server, "message") if r["round"] == 0]
    firsts = [batch[1] if batch[0] == course.ids[0] else batch[0] for batch in plan.agent_batches]
    assert sorted(r["lego_id"] for r in warm_ups) == sorted(firsts)
    assert all(r["t"] < first["t"] for r in warm_ups)
    assert all(r["usage"]["cache_creation"]["ephemeral_1h_input_tokens"] > 0 for r in warm_ups)
    warmed = {r["lego_id"] for r in warm_ups}
    rest = {i for i in course.ids if course.by_id[i].position > 1} - warmed
    first_round = [r for r in ops(server, "batch_request") if r["batch_id"] == first["batch_id"]]
    assert rest <= set(first["custom_ids"]) <= rest | warmed  # a warm-up's repair goes in the batch too
    assert all(r["round"] == 1 for r in first_round if r["custom_id"] in warmed)
    assert all(r["usage"]["cache_creation_input_tokens"] == 0 for r in first_round)  # all read the warm prefixes
    assert all(r["usage"]["cache_read_input_tokens"] > 0 for r in first_round)
    assert len(creates) >= 2  # the phrases using future vocabulary went back in a repair round
    assert all(r["repair"] for c in creates[1:] for r in ops(server, "batch_request") if r["batch_id"] == c["batch_id"])
    # The same cached prefix per agent: one system prompt hash per agent batch.
    hashes = {r["custom_id"]: r["prefix_hash"] for r in ops(server, "batch_request")}
    for batch in plan.agent_batches:
        assert len({hashes[i] for i in batch if i in hashes}) == 1
    # Journals: backend and model for the cost report, one line per basket.
    records = [
        json.loads(line)
        for path in CourseLayout(course.root).orch_dir(1, 1).glob("agent_*_journal.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert len(records) == len(course.legos) and {r["backend"] for r in records} == {"anthropic-batch"}
    assert {r["model"] for r in records} == {MODEL}
    # The cost report sums to what the server returned: the batch's at the batch price, the
    # warm-ups at the Messages price.
    table = PriceTable.load()
    spend = course_spend(course, load_plans(course), table)["run"]
    usage, interactive = server_usage(server), message_usage(server)
    assert Usage.from_json(spend["tokens"]) == usage + interactive and usage.total > 0
    expected = table.cost(usage, MODEL, batch=True) + table.cost(interactive, MODEL)
    assert spend["cost_usd"] == pytest.approx(expected, abs=1e-6)
    assert interactive.cache_creation_1h_input_tokens > 0
    # The progress file and the pane show the batch.
    state = progress(course)
    assert state["state"] == "done" and state["cost_usd"] == pytest.approx(spend["cost_usd"], abs=1e-5)
    batch = state["batch"]
    assert batch["round"] == len(creates) and batch["created"] == len(creates)
    assert {"processing", "succeeded", "errored", "expired"} <= batch.keys()
    assert "batch r1 msgbatch_fake_" in out


def test_sigkill_while_processing_reattaches_to_the_same_batch(api, course: Course, procs: list) -> None:
    server = api("--batch-delay", "2.5")
    state_file = CourseLayout(course.root).orch_batch_state(1, 1)
    proc = start_worker(course, procs)

    def recorded() -> str | None:
        try:
            return json.loads(state_file.read_text()).get("batch_id")
        except (OSError, ValueError):
            return None

    batch_id = wait_for(recorded, what="the batch id in the state file")
    assert ops(server, "batch_create")[0]["batch_id"] == batch_id
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert not ops(server, "batch_results")  # killed while the batch was processing

    code, _, err = finish(start_worker(course, procs))
    assert code == 0, err
    assert_complete(course)
    creates = ops(server, "batch_create")
    assert len(creates) == 1, [c["batch_id"] for c in creates]  # no fault: one round, ONE create
    assert progress(course)["batch"]["reattached"] == batch_id
    counts = helpers.journal_ids(course.root)
    assert set(counts) == set(course.ids) and max(counts.values()) == 1
    # Each request was answered (and billed) once, and counted once.
    assert Usage.from_json(
        course_spend(course, load_plans(course), PriceTable.load())["run"]["tokens"]
    ) == server_usage(server) + message_usage(server)


def test_expired_and_errored_results_are_sent_again(api, course: Course, procs: list) -> None:
    server = api(
        "--batch-delay", "0.1", "--fault", "batch_expired:0.15", "--fault", "batch_errored:0.15", "--seed", "11"
    )
    code, _, err = finish(start_worker(course, procs, "--retries", "4"))
    assert code == 0, err
    assert_complete(course)
    requests = ops(server, "batch_request")
    failed = {r["custom_id"] for r in requests if r["result"] in ("expired", "errored")}
    assert len(failed) >= 10
    answered = {r["custom_id"] for r in requests if r["result"] == "succeeded"}
    assert failed <= answered  # every one was sent again and answered
    notes = [
        n
        for path in CourseLayout(course.root).orch_dir(1, 1).glob("agent_*_journal.jsonl")
        for line in path.read_text().splitlines()
        for n in json.loads(line)["notes"]
    ]
    assert any(": expired" in n for n in notes) and any(": errored (api_error" in n for n in notes)
    assert Usage.from_json(
        course_spend(course, load_plans(course), PriceTable.load())["run"]["tokens"]
    ) == server_usage(server) + message_usage(server)


def test_errored_past_the_bound_fails_the_agents_then_a_rerun_resumes(api, course: Course, procs: list) -> None:
    broken = api("--batch-delay", "0.05", "--fault", "batch_errored:1")
    code, _, err = finish(start_worker(course, procs, "--retries", "1", "--max-attempts", "2"))
    assert code == 1, err
    state = progress(course)
    assert state["state"] == "failed" and "batch request errored 2 times" in state["error"]
    # Two rounds per attempt (the request and its one resend), two attempts.
    assert len(ops(broken, "batch_create")) == 4
    assert not CourseLayout(course.root).orch_baskets(1, 1).exists()
    # Only LEGO #1 (no request needed) and the warm-up answers, which went through the Messages API.
    warmed = {r["lego_id"] for r in ops(broken, "message") if r["status"] == 200 and not r["repair"]}
    assert len(warmed) == AGENTS and set(helpers.journal_ids(course.root)) <= {course.ids[0], *warmed}
    broken.stop()

    api("--batch-delay", "0.05")
    code, _, err = finish(start_worker(course, procs))
    assert code == 0, err
    assert_complete(course)
    assert max(helpers.journal_ids(course.root).values()) == 1


# -- one conversation through the session: repaired or dropped --------------------------------------


def one_basket(course: Course, lego_id: str, **options: object):
    options.setdefault("fill_windows", False)
    generator = make_generator("anthropic-batch", course, GeneratorOptions(model=MODEL, poll_interval=0.02, **options))  # type: ignore[arg-type]
    try:
        return generator.generate(course.context(lego_id))
    finally:
        generator.close()


def test_an_expired_request_is_sent_again(api, course: Course) -> None:
    server = api("--batch-delay", "0.05", "--fault-first", "batch_expired:1")
    lego_id = course.ids[31]  # the fake writes real sentences: this LEGO has four in the corpus
    result = one_basket(course, lego_id)
    assert result.requests == 1 and result.basket.e and result.backend == "anthropic-batch"
    assert any("expired" in n for n in result.notes)
    assert [r["result"] for r in ops(server, "batch_request")] == ["expired", "succeeded"]


def test_a_repair_that_keeps_erroring_is_dropped_and_the_basket_kept(api, course: Course) -> None:
    # The first answer carries a phrase with future vocabulary: a repair round is asked for, and
    # its request errors twice, past --retries 1: the basket keeps the phrases that passed.
    server = api(
        "--batch-delay",
        "0.05",
        "--fault-first",
        "future:1",
        "--fault-first",
        "batch_ok:1",
        "--fault-first",
        "batch_errored:2",
    )
    lego_id = course.ids[39]  # four real sentences in the corpus
    result = one_basket(course, lego_id, max_retries=1)
    assert [r["result"] for r in ops(server, "batch_request")] == ["succeeded", "errored", "errored"]
    assert result.requests == 1 and result.repair_rounds == 1
    assert result.basket.e and any("dropped the repair" in n for n in result.notes)
    assert any("future" in r.reason or "not available" in r.reason or r.reason for r in result.rejected)
    assert not basket_problems(course, {lego_id: result.basket.to_json()}, [lego_id])


def test_a_request_that_never_succeeds_is_a_generation_error(api, course: Course) -> None:
    api("--batch-delay", "0.05", "--fault-first", "batch_errored:3")
    with pytest.raises(GenerationError, match="batch request errored 2 times"):
        one_basket(course, course.ids[10], max_retries=1)


# -- the budget guard ----------------------------------------------------------------------------------


def test_budget_reached_exits_4_keeps_everything_and_resumes(api, course: Course, procs: list) -> None:
    server = api("--batch-delay", "0.1", "--fault", "future:0.3", "--seed", "2")
    code, _, err = finish(start_worker(course, procs, "--max-cost", "0.01"))
    assert code == 4, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("budget reached: $") and line.endswith(" of $0.0100")
    state = progress(course)
    assert state["state"] == "budget" and state["budget"]["reached"] and state["cost_usd"] >= 0.01
    assert len(ops(server, "batch_create")) == 1  # the first round spent it; no second batch
    saved = helpers.journal_ids(course.root)
    assert 0 < sum(saved.values()) < len(course.legos) and max(saved.values()) == 1
    assert not CourseLayout(course.root).orch_baskets(1, 1).exists()
    state_file = json.loads(CourseLayout(course.root).orch_batch_state(1, 1).read_text())
    assert state_file["batch_id"] is None and state_file["jobs"]  # the repairs wait, resumable

    code, _, err = finish(start_worker(course, procs))  # no limit: resumes the repair round
    assert code == 0, err
    assert_complete(course)
    counts = helpers.journal_ids(course.root)
    assert max(counts.values()) == 1 and saved.keys() <= counts.keys()
    assert all(r["repair"] for r in ops(server, "batch_request")[len(course.legos) - 1 :])


def test_budget_counts_the_other_orchestrators_progress_files(api, course: Course, procs: list) -> None:
    server = api("--batch-delay", "0.1")
    other = CourseLayout(course.root).orch_progress(1, 2)
    other.write_text(json.dumps({"segment": 1, "orch": 2, "cost_usd": 2.5}))
    code, _, err = finish(start_worker(course, procs, "--max-cost", "2"))
    assert code == 4 and "budget reached: $2.5000 of $2.0000" in err
    assert not ops(server, "batch_create")  # not one request started
    assert sum(helpers.journal_ids(course.root).values()) == 1  # LEGO #1 needs none


def test_budget_guard_with_the_anthropic_backend(api, course: Course, procs: list) -> None:
    server = api()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "supervisor.cli",
            "worker",
            str(course.root),
            "--segment",
            "1",
            "--orch",
            "1",
            "--backend",
            "anthropic",
            "--model",
            MODEL,
            "--max-cost",
            "0.02",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    procs.append(proc)
    code, _, err = finish(proc)
    assert code == 4, err
    assert re.search(r"budget reached: \$0\.0[2-9]\d* of \$0\.0200$", err.strip())
    saved = helpers.journal_ids(course.root)
    assert 0 < sum(saved.values()) < len(course.legos) and max(saved.values()) == 1
    assert len([r for r in server.requests() if r.get("op") == "message"]) < len(course.legos)
    records = [
        json.loads(line)
        for path in CourseLayout(course.root).orch_dir(1, 1).glob("agent_*_journal.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert {(r["backend"], r["model"]) for r in records} == {("anthropic", MODEL)}  # priced at full rate


def test_max_cost_needs_a_price_for_the_model(api, course: Course, procs: list, tmp_path: Path) -> None:
    api()
    row = {"structured_output": True, "strict_tools": True, "forced_tool_choice": True, "sampling_params": True}
    row |= {"thinking_default": False, "min_cache_tokens": 1024, "tokenizer_factor": 1.0}
    table = tmp_path / "models.json"
    table.write_text(json.dumps({"models": {"unpriced-model": row}}))
    env = {"PHASE5_MODELS": str(table)}
    args = ("--backend", "anthropic-batch", "--max-cost", "1", "--model", "unpriced-model")
    proc = helpers.start_worker(course, *args, procs=procs, env=env)
    code, _, err = finish(proc)
    assert code == 2 and "no price for model 'unpriced-model'" in err
    proc = start_worker(course, procs, "--model", "no-such-model")
    code, _, err = finish(proc)
    assert code == 2 and "model 'no-such-model' is not in the model table" in err and err.count("\n") == 1


# -- phase5 generate ---------------------------------------------------------------------------------


def test_generate_command_with_batches_and_a_budget(api, demo_course: Path, tmp_path: Path) -> None:
    server = api("--batch-delay", "0.05")
    cli = [
        sys.executable,
        "-m",
        "supervisor.cli",
        "generate",
        str(demo_course),
        "--backend",
        "anthropic-batch",
        *FAST,
        "--json",
    ]
    out = tmp_path / "baskets.json"
    done = subprocess.run([*cli, "--out", str(out)], capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["baskets"] == 125 and summary["failed"] == {} and summary["cost_usd"] > 0
    assert len([r for r in ops(server, "batch_create") if r["status"] == 200]) == 1  # no fault: one round
    assert not (tmp_path / ".baskets.json.batch.json").exists()  # the state file goes when done
    checked = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "validate", str(demo_course), str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout

    capped = subprocess.run(
        [
            *cli,
            "--out",
            str(tmp_path / "b.json"),
            "--backend",
            "anthropic",
            "--concurrency",
            "2",
            "--max-cost",
            "0.005",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )
    assert capped.returncode == 4, capped.stderr
    assert capped.stderr.strip().splitlines()[-1].endswith("of $0.0050")
    partial = json.loads(capped.stdout)
    assert partial["budget_reached"] and 0 < partial["baskets"] < 125 and partial["cost_usd"] >= 0.005
