"""Mutation testing of the modules where a silent bug costs money or data (mutmut 3).

Not part of `.ci/run`: a module takes minutes to an hour on two cores. Run one module at a time,
when it changes, and record the result in MUTATION.md:

    .venv/bin/pip install -e '.[mutation]'
    .venv/bin/python tests/mutation.py --list
    nice .venv/bin/python tests/mutation.py consensus          # one module (re-runnable)
    bash .ci/with-postgres nice .venv/bin/python tests/mutation.py state  # needs PostgreSQL
    .venv/bin/python tests/mutation.py --report               # the table for MUTATION.md

Each module runs in its own folder, `.mutation/<module>/`, holding a copy of the tracked files
and a pyproject.toml whose `[tool.mutmut]` names only that module, so two modules never share
mutmut's state and a second run re-tests only the functions whose code changed (mutmut keeps a
hash per function). `--fresh` starts a module from nothing.

mutmut runs, per mutant, only the tests that executed the mutated function during its stats
pass (collected again whenever the module's tests change), in this process's forks: tests that
start gtbot in a subprocess or a spawned worker do not see the mutant, which is why each module
lists in-process tests. A survivor is either a missing test (write one that kills it) or an
equivalent mutant: then say why in tests/mutation_equivalents/<module>.toml, keyed by the
function and the mutated line, so the reason follows the mutant when mutmut renumbers it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"
EQUIVALENTS = ROOT / "tests" / "mutation_equivalents"  # <module>.toml each
# mutmut's exit codes (mutmut/stats.py, status_by_exit_code).
STATUS = {
    1: "killed",
    3: "killed",
    0: "survived",
    5: "no tests",
    33: "no tests",
    34: "skipped",
    36: "timeout",
    24: "timeout",
    -24: "timeout",
    152: "timeout",
    255: "timeout",
    37: "type check",
    -11: "segfault",
    -9: "segfault",
}


@dataclass(frozen=True)
class Target:
    """A module to mutate and the in-process tests that guard it."""

    path: str
    tests: tuple[str, ...]
    # Mutant-name globs when only part of the module is in scope (project validation).
    names: tuple[str, ...] = ()
    # Lines only PostgreSQL runs (the store's): judged only with a server, so the run needs one.
    postgres: bool = False


_RESULTS = (
    "tests/test_results_consensus.py",
    "tests/test_results_consolidation.py",
    "tests/test_results_forms.py",
    "tests/test_results_fastpath.py",
    "tests/test_results_reader.py",
)
TARGETS: dict[str, Target] = {
    "consensus": Target("bot/results/consensus.py", _RESULTS),
    "reader": Target("bot/results/reader.py", _RESULTS),
    "spec": Target("bot/results/spec.py", (*_RESULTS, "tests/test_config.py")),
    "launcher": Target(
        "bot/jobs/launcher.py",
        (
            "tests/test_launch_decisions.py",
            "tests/test_launcher.py",
            "tests/test_launch_guards.py",
        ),
    ),
    # The store's own tests: a mutant of a query must fail there, not only in a flow that
    # happens to pass through it (the announcement flows would make each mutant cost a minute).
    "state": Target(
        "bot/state.py",
        ("tests/test_state.py", "tests/test_store_rows.py", "tests/test_lease.py"),
        postgres=True,
    ),
    "watcher": Target(
        "bot/jobs/watcher.py",
        (
            "tests/test_watcher_texts.py",
            "tests/test_watcher_parts.py",
            "tests/test_watcher.py",
            "tests/test_announcement.py",
            "tests/test_lease.py",
            # The stall warning, direct messages when a channel is gone, results built in the
            # background, and the scheduler's start and stop: run only in these flows.
            "tests/test_people_told.py",
            "tests/test_graceful_stop.py",
        ),
    ),
    "auth": Target(
        "handlers/auth.py",
        (
            "tests/test_auth_rules.py",
            "tests/test_slack_permissions.py",
            "tests/test_job_permissions.py",
        ),
    ),
    # The validation of a project (bot/project/: one module per part of project-config.yml
    # and gtbot.yml, each mutated on its own against the config tests).
    **{
        f"project-{part}": Target(
            f"bot/project/{part}.py",
            (
                "tests/test_config.py",
                "tests/test_hostile_config.py",
                "tests/test_job_parameters.py",
                "tests/test_relabel_rules.py",  # the `job: adaptive:` settings
            ),
        )
        for part in ("loading", "validation", "job_settings", "adaptive_settings", "aws_rules")
    },
    "s3": Target(
        "aws/s3.py",
        ("tests/test_s3_calls.py", "tests/test_s3_steps.py", "tests/test_links.py"),
    ),
}


def _tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    return [p for p in out.decode().split("\0") if p]


def _prepare(name: str, target: Target, fresh: bool) -> Path:
    """The module's folder: the tracked files as they are now (mtimes kept, so mutmut sees
    which files changed since its last run) and a pyproject naming this module only."""
    work = WORK / name
    if fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    tracked = _tracked_files()
    for rel in tracked:
        src, dst = ROOT / rel, work / rel
        if not src.is_file():
            continue
        if dst.exists() and dst.stat().st_mtime_ns == src.stat().st_mtime_ns:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        # mutmut copies sources into mutants/ once; a changed file must be copied again.
        stale = work / "mutants" / rel
        if stale.exists() and not rel.endswith(".py"):
            stale.unlink()
    pyproject = (ROOT / "pyproject.toml").read_text()
    tests = ", ".join(json.dumps(t) for t in target.tests)
    sources = ["bot", "handlers", "aws", "templates"]
    # The rest of the checkout (Dockerfile, README, manifests...): tests read them beside the code.
    others = sorted({rel.split("/")[0] for rel in tracked} - {*sources, "tests"})
    pyproject += (
        "\n[tool.mutmut]\n"
        f"source_paths = {json.dumps(sources)}\n"
        f"also_copy = {json.dumps(others)}\n"
        f"only_mutate = [{json.dumps(target.path)}]\n"
        # In-process and serial: mutmut forks per mutant; xdist would hide the mutant.
        'pytest_add_cli_args = ["-n", "0", "-p", "no:cacheprovider", "-W", "ignore"]\n'
        f"pytest_add_cli_args_test_selection = [{tests}]\n"
        "timeout_multiplier = 5.0\n"
        "use_git_change_detection = false\n"
    )
    (work / "pyproject.toml").write_text(pyproject)
    return work


def _tests_digest(target: Target) -> str:
    """The tests a module's mutants were last checked against (with the shared fixtures)."""
    digest = hashlib.sha256()
    shared = sorted(p for p in (ROOT / "tests").glob("*.py") if not p.name.startswith("test_"))
    for path in [*(ROOT / t for t in target.tests), *shared]:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run(name: str, fresh: bool, children: int) -> int:
    """mutmut on one module; mutants that survived an earlier run are checked again when the
    tests changed since (mutmut itself re-runs only mutants of changed functions)."""
    target = TARGETS[name]
    if target.postgres and not os.environ.get("GTBOT_TEST_POSTGRES_URL"):
        print(
            f"{name}: some lines run only on PostgreSQL, and without a server their mutants "
            "would survive. Run it under a throwaway one:\n"
            f"    bash .ci/with-postgres nice .venv/bin/python tests/mutation.py {name}",
            file=sys.stderr,
        )
        return 2
    work = _prepare(name, target, fresh)
    # The tests as copied for this run: a test edited while it runs is checked next time.
    digest = _tests_digest(target)
    before = (
        json.loads((work / "summary.json").read_text()) if (work / "summary.json").exists() else {}
    )
    mutmut = Path(sys.executable).with_name("mutmut")
    cmd = ["nice", "-n", "10", str(mutmut), "run", "--max-children", str(children)]
    # Each test makes its own PostgreSQL database (tests/db_support.py), so mutants running
    # side by side share the server safely; modules without PostgreSQL lines skip those tests.
    env = {k: v for k, v in os.environ.items() if k != "GTBOT_TEST_POSTGRES_URL" or target.postgres}
    stats = work / "mutants" / "mutmut-stats.json"
    if before.get("tests") != digest and stats.exists():
        # mutmut keeps which tests cover which function from its first run: a test added since
        # would never be run against the mutants it covers, so it collects them again.
        stats.unlink()
    print(f"{name}: {' '.join(cmd + list(target.names))} (in {work})", flush=True)
    code = subprocess.run(cmd + list(target.names), cwd=work, env=env).returncode
    if before and before.get("tests") != digest:
        last = summarize(name)
        # Timeouts too: on a loaded machine a slow test run can time out with no hang at all.
        again = [*last["unexplained"], *last["explained"], *last["timeouts"]]  # type: ignore[misc]
        if again:
            print(f"{name}: the tests changed; checking {len(again)} survivors again", flush=True)
            code = subprocess.run(cmd + again, cwd=work, env=env).returncode or code
    summary = summarize(name)
    summary["tests"] = digest
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary["counts"]))
    for mutant in summary["unexplained"]:
        print(f"\nSURVIVED {mutant}")
        print(_show(work, mutant))
    return code


def _show(work: Path, mutant: str) -> str:
    mutmut = Path(sys.executable).with_name("mutmut")
    out = subprocess.run(
        [str(mutmut), "show", mutant], cwd=work, capture_output=True, text=True
    ).stdout
    return out


def _mutated_line(diff: str) -> str:
    """The mutant's changed line(s), stripped: stable when mutmut renumbers mutants. A mutant
    that only removes lines (an argument, a condition) is named by what it removed."""

    def lines(sign: str) -> list[str]:
        return [
            line[1:].strip()
            for line in diff.splitlines()
            if line.startswith(sign) and not line.startswith(sign * 3)
        ]

    added = lines("+")
    return " | ".join(added) if added else "removed: " + " | ".join(lines("-"))


def _function(mutant: str) -> str:
    return mutant.rsplit("__mutmut_", 1)[0]


def _equivalents() -> dict[tuple[str, str], str]:
    known = {}
    for path in sorted(EQUIVALENTS.glob("*.toml")):
        for e in tomllib.loads(path.read_text()).get("equivalent", []):
            known[(e["function"], e["mutated"])] = e["reason"]
    return known


def summarize(name: str) -> dict[str, object]:
    """Counts per status for one module; survivors split into explained and unexplained."""
    target = TARGETS[name]
    work = WORK / name
    meta = work / "mutants" / (target.path + ".meta")
    if not meta.exists():
        return {"counts": {}, "unexplained": [], "explained": []}
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    if target.names:
        import fnmatch

        codes = {k: v for k, v in codes.items() if any(fnmatch.fnmatch(k, g) for g in target.names)}
    counts: dict[str, int] = {}
    survivors = []
    for mutant, code in sorted(codes.items()):
        status = "not checked" if code is None else STATUS.get(code, "suspicious")
        counts[status] = counts.get(status, 0) + 1
        if status in ("survived", "no tests", "suspicious", "timeout"):
            survivors.append((mutant, status))
    known = _equivalents()
    explained, unexplained, timeouts = [], [], []
    for mutant, status in survivors:
        if status == "timeout":
            timeouts.append(mutant)  # a mutant that makes the tests hang is caught
            continue
        line = _mutated_line(_show(work, mutant))
        reason = known.get((_function(mutant), line))
        (explained if reason else unexplained).append(mutant)
    summary = {
        "counts": counts,
        "unexplained": unexplained,
        "explained": explained,
        "timeouts": timeouts,
    }
    path = work / "summary.json"
    if path.exists() and "tests" in (last := json.loads(path.read_text())):
        summary["tests"] = last["tests"]  # a report must not look like changed tests to `run`
    path.write_text(json.dumps(summary, indent=1))
    return summary


def report() -> str:
    """The table for MUTATION.md, from each module's last run."""
    rows = [
        "| module | mutants | killed | timeout | survived: equivalent | survived: not explained "
        "| no tests |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, target in TARGETS.items():
        s = summarize(name)
        counts: dict[str, int] = s["counts"]  # type: ignore[assignment]
        if not counts:
            rows.append(f"| `{target.path}` | not run | | | | | |")
            continue
        explained = len(s["explained"])  # type: ignore[arg-type]
        unexplained = len(s["unexplained"])  # type: ignore[arg-type]
        rows.append(
            f"| `{target.path}`{' (validation)' if target.names else ''} "
            f"| {sum(counts.values())} | {counts.get('killed', 0) + counts.get('type check', 0)} "
            f"| {counts.get('timeout', 0)} | {explained} | {unexplained} "
            f"| {counts.get('no tests', 0)} |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="*", choices=[[], *TARGETS], help="modules to mutate")
    parser.add_argument("--list", action="store_true", help="the modules and their tests")
    parser.add_argument("--fresh", action="store_true", help="forget the earlier results")
    parser.add_argument("--report", action="store_true", help="print the MUTATION.md table")
    parser.add_argument("--children", type=int, default=2, help="mutants at once (2)")
    args = parser.parse_args()
    if args.list:
        for name, target in TARGETS.items():
            print(f"{name:10} {target.path}: {' '.join(target.tests)}")
        return 0
    if args.report:
        print(report())
        return 0
    code = 0
    for name in args.modules:
        code = run(name, args.fresh, args.children) or code
    return code


if __name__ == "__main__":
    raise SystemExit(main())
