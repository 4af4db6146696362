"""`referee check` as a subprocess: exit codes, output formats and options.

Exit codes: 0 correct; 1 the candidate failed a check; 2 usage error or unusable input file;
3 Referee itself failed.
"""

from __future__ import annotations

import json
import os

import pytest

from triton_referee.worker.models import MAX_SOURCE_BYTES


def _document(stdout: str, stderr: str) -> dict:
    """The one JSON document that `--json` prints (the whole of stdout)."""
    try:
        document = json.loads(stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(
            f"stdout is not one JSON document ({exc}); stdout={stdout[:2000]!r} stderr={stderr[-3000:]!r}"
        ) from None
    assert isinstance(document, dict)
    return document


def _flat(text: str) -> str:
    """Rich wraps long lines; compare messages with whitespace collapsed."""
    return " ".join(text.split())


# --- exit code 0 / 1 with --json and the options -------------------------------------------------


def test_correct_json_trials_and_fast_p(run_check, write_pair, tiny_reference, honest_tiny_candidate):
    # One input set only (an empty INPUT_SETS declaration), so --trials alone decides the count
    # (the engine runs at least one trial per input set).
    reference, candidate = write_pair(tiny_reference + "\nINPUT_SETS = []\n", honest_tiny_candidate)
    code, stdout, stderr = run_check(reference, candidate, "--json", "--trials", "2", "--reward", "fast_p")
    assert code == 0, (stdout, stderr)
    document = _document(stdout, stderr)
    assert document["verdict"] == "correct"
    assert document["correctness"]["input_sets"] == 1
    assert document["correctness"]["trials"] == 2 + len(document["correctness"]["value_ranges"])
    assert document["correctness"]["passed"] == document["correctness"]["trials"]
    assert document["reward_preset"] == "fast_p"
    assert document["reward"] == 1.0  # fast_p on the CPU: correctness only
    assert document["environment"]["interpreter"] is True


@pytest.fixture(scope="module")
def softmax_wrong_seeded(run_check, examples_dir):
    """The wrong softmax candidate, twice with the same --seed (the second with --reward drkernel)."""
    reference, candidate = examples_dir / "softmax" / "reference.py", examples_dir / "softmax" / "candidate_wrong.py"
    first = run_check(reference, candidate, "--json", "--seed", "11", "--trials", "2")
    second = run_check(reference, candidate, "--json", "--seed", "11", "--trials", "2", "--reward", "drkernel")
    return first, second


def test_incorrect_exits_1_with_one_json_document(softmax_wrong_seeded):
    (code, stdout, stderr), _ = softmax_wrong_seeded
    assert code == 1, (stdout, stderr)
    document = _document(stdout, stderr)
    assert document["verdict"] == "incorrect"
    assert document["reward"] == 0.0
    assert document["correctness"]["first_failure"]["reason"]


def test_seed_fixes_the_inputs(softmax_wrong_seeded, examples_dir, evaluate_source):
    (code1, stdout1, stderr1), (code2, stdout2, stderr2) = softmax_wrong_seeded
    assert code1 == code2 == 1, (stderr1, stderr2)
    first, second = _document(stdout1, stderr1), _document(stdout2, stderr2)
    assert first["id"] != second["id"], "two runs, not one cached answer"
    assert first["correctness"]["max_abs_error"] == second["correctness"]["max_abs_error"]
    assert first["correctness"]["first_failure"]["worst_index"] == second["correctness"]["first_failure"]["worst_index"]
    # The same seed in-process gives the same inputs too; the CLI passes --seed through unchanged.
    in_process = evaluate_source(
        (examples_dir / "softmax" / "reference.py").read_text(),
        (examples_dir / "softmax" / "candidate_wrong.py").read_text(),
        seed=11,
    )
    assert in_process.correctness.max_abs_error == first["correctness"]["max_abs_error"]
    # ... and a different seed gives different inputs.
    other = evaluate_source(
        (examples_dir / "softmax" / "reference.py").read_text(),
        (examples_dir / "softmax" / "candidate_wrong.py").read_text(),
        seed=12,
    )
    assert other.correctness.max_abs_error != first["correctness"]["max_abs_error"]


def test_reward_preset_drkernel(softmax_wrong_seeded):
    (_, first, first_err), (_, second, second_err) = softmax_wrong_seeded
    assert _document(first, first_err)["reward_preset"] == "tritonrl"
    assert _document(second, second_err)["reward_preset"] == "drkernel"


def test_compile_error_exits_1_with_a_readable_summary(run_check, write_pair, tiny_reference):
    reference, candidate = write_pair(tiny_reference, "import triton\n\nclass ModelNew(:\n    pass\n")
    code, stdout, stderr = run_check(reference, candidate)
    assert code == 1, (stdout, stderr)
    assert "compile_error" in stdout
    assert "line 3" in stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(stdout)
    assert len(stdout.splitlines()) < 40, "the summary should be short"


def test_syntax_error_exits_1_with_json(run_check, write_pair, tiny_reference):
    reference, candidate = write_pair(tiny_reference, "import triton\n\nclass ModelNew(:\n    pass\n")
    code, stdout, stderr = run_check(reference, candidate, "--json")
    assert code == 1, (stdout, stderr)
    document = _document(stdout, stderr)
    assert document["verdict"] == "compile_error"
    assert document["error"]["line"] == 3


def test_cheating_exits_1_with_a_readable_summary(run_check, write_pair, tiny_reference, make_tiny_candidate):
    reference, candidate = write_pair(tiny_reference, make_tiny_candidate("return torch.relu(x)"))
    code, stdout, stderr = run_check(reference, candidate, "--trials", "1")
    assert code == 1, (stdout, stderr)
    assert "cheating" in stdout
    assert "no_triton_launch" in stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(stdout)


# --- exit code 3: Referee's own failure ----------------------------------------------------------


def test_harness_python_without_torch_exits_3(run_check, write_pair, tiny_reference, honest_tiny_candidate, python_without_torch):
    reference, candidate = write_pair(tiny_reference, honest_tiny_candidate)
    code, stdout, stderr = run_check(reference, candidate, "--json", env={"REFEREE_HARNESS_PYTHON": python_without_torch})
    assert code == 3, (stdout, stderr)
    document = _document(stdout, stderr)
    assert document["verdict"] == "infrastructure_error"
    assert document["reward"] == 0.0


def test_missing_harness_python_exits_3(run_check, write_pair, tiny_reference, honest_tiny_candidate, tmp_path):
    reference, candidate = write_pair(tiny_reference, honest_tiny_candidate)
    code, stdout, stderr = run_check(reference, candidate, env={"REFEREE_HARNESS_PYTHON": str(tmp_path / "no-such-python")})
    assert code == 3, (stdout, stderr)
    assert "infrastructure_error" in stdout
    assert "Traceback" not in stderr


# --- exit code 2: usage errors and unusable files ------------------------------------------------


def _assert_usage_error(result: tuple[int, str, str], *phrases: str) -> None:
    code, stdout, stderr = result
    assert code == 2, (code, stdout, stderr)
    assert stdout == "", "usage errors print nothing on stdout"
    assert "Traceback" not in stderr
    message = _flat(stderr)
    for phrase in phrases:
        assert phrase in message, (phrase, stderr)


@pytest.mark.parametrize(
    ("option", "value", "choices"),
    [
        ("--device", "gpu", ("'auto'", "'cuda'", "'cpu'")),
        ("--reward", "best", ("'tritonrl'", "'fast_p'", "'drkernel'")),
        ("--precision", "fp8", ("'fp32'", "'fp16'", "'bf16'")),
        ("--mode", "lenient", ("'strict'", "'kernelbench'")),
        ("--format", "xml", ("'text'", "'json'", "'github'")),
        ("--isolation", "chroot", ("'auto'", "'docker'", "'bwrap'", "'unshare'", "'process'")),
    ],
)
def test_an_unknown_choice_is_a_usage_error_naming_the_choices(run_check, examples_dir, option, value, choices):
    """typer checks each choice (an enum or a Literal), before anything runs."""
    result = run_check(examples_dir / "relu" / "reference.py", examples_dir / "relu" / "candidate.py", option, value)
    _assert_usage_error(result, option, f"'{value}'", *choices)


def test_a_bad_setting_in_the_environment_is_a_usage_error(run_check, examples_dir):
    """REFEREE_LOCKDOWN is the operator's: a value outside its choices stops the command (exit 2) rather
    than running with something else."""
    result = run_check(
        examples_dir / "relu" / "reference.py", examples_dir / "relu" / "candidate.py", env={"REFEREE_LOCKDOWN": "partial"}
    )
    _assert_usage_error(result, "REFEREE_LOCKDOWN", "'on'", "'landlock'", "'seccomp'", "'off'")


def test_bad_trials_value(run_check, examples_dir):
    code, stdout, stderr = run_check(
        examples_dir / "relu" / "reference.py", examples_dir / "relu" / "candidate.py", "--trials", "0"
    )
    assert code == 2 and stdout == ""
    assert "trials" in stderr


@pytest.mark.parametrize("side", ["reference", "candidate"])
def test_missing_file(side, run_check, examples_dir, tmp_path):
    missing = tmp_path / "missing.py"
    paths = {"reference": examples_dir / "relu" / "reference.py", "candidate": examples_dir / "relu" / "candidate.py"}
    paths[side] = missing
    _assert_usage_error(run_check(paths["reference"], paths["candidate"]), "cannot read", side)


def test_empty_reference(run_check, write_pair, honest_tiny_candidate):
    reference, candidate = write_pair("", honest_tiny_candidate)
    _assert_usage_error(run_check(reference, candidate), "empty")


@pytest.mark.parametrize("side", ["reference", "candidate"])
def test_binary_garbage(side, run_check, write_pair, tiny_reference, honest_tiny_candidate):
    garbage = b"\xff\xfe\x00\x80binary\xc3\x28" + os.urandom(64)
    reference, candidate = write_pair(
        garbage if side == "reference" else tiny_reference, garbage if side == "candidate" else honest_tiny_candidate
    )
    _assert_usage_error(run_check(reference, candidate), "not UTF-8", side)


@pytest.mark.parametrize("side", ["reference", "candidate"])
def test_file_over_the_size_limit(side, run_check, write_pair, tiny_reference, honest_tiny_candidate):
    huge = "# padding\n" * (MAX_SOURCE_BYTES // 10 + 1)
    assert len(huge.encode()) > MAX_SOURCE_BYTES
    reference, candidate = write_pair(
        huge + tiny_reference if side == "reference" else tiny_reference,
        huge + honest_tiny_candidate if side == "candidate" else honest_tiny_candidate,
    )
    _assert_usage_error(run_check(reference, candidate), "limit", str(MAX_SOURCE_BYTES))


def test_reference_without_get_inputs(run_check, write_pair, tiny_reference, honest_tiny_candidate):
    reference_source = tiny_reference.replace("def get_inputs():", "def make_inputs():")
    reference, candidate = write_pair(reference_source, honest_tiny_candidate)
    _assert_usage_error(run_check(reference, candidate), "get_inputs")


def test_reference_with_a_syntax_error(run_check, write_pair, tiny_reference, honest_tiny_candidate):
    reference, candidate = write_pair(tiny_reference + "\ndef broken(:\n", honest_tiny_candidate)
    _assert_usage_error(run_check(reference, candidate, "--json"), "not valid Python")


@pytest.mark.parametrize(
    "declaration", ['INPUT_SETS = [{"n": "large"}]', "INPUT_SETS = [{[1]: 7}]"], ids=["wrong-type", "unhashable"]
)
def test_reference_with_malformed_input_sets(declaration, run_check, write_pair, tiny_reference, honest_tiny_candidate):
    reference, candidate = write_pair(tiny_reference + "\n" + declaration + "\n", honest_tiny_candidate)
    _assert_usage_error(run_check(reference, candidate), "INPUT_SETS")


def test_reference_that_fails_when_run(run_check, write_pair, tiny_reference, honest_tiny_candidate):
    """Found only once the reference process runs it: still the caller's input error, exit 2."""
    reference_source = tiny_reference.replace("return [torch.randn(n)]", 'raise RuntimeError("no inputs today")')
    assert reference_source != tiny_reference
    reference, candidate = write_pair(reference_source, honest_tiny_candidate)
    _assert_usage_error(run_check(reference, candidate, "--json"), "no inputs today")
