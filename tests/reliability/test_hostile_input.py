"""Hostile input through the real command line: one located error line, exit 2, within 1 s and 100 MB,
nothing executed (issue 7, point 4).

Each hostile file is given as the playbook, as the inventory and as an `-e @FILE` extra-vars file, to
`ce-agent validate` and to `ce-agent run`. The parser-level refusals (which message for which input) are
tests/config/test_yamlfile.py's; here the whole program is held to the budget: the seconds measured
around the process minus the interpreter's start-up measured in the same test, and the peak RSS of
the process itself."""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.config.test_yamlfile import ALIAS_BOMB
from tests.reliability.conftest import MEMORY_BUDGET_MIB, TIME_BUDGET_S, Measured, measure, record

PLAYBOOK = """\
- name: Fine
  hosts: localhost
  checks:
    - name: here
      file: {path: .}
"""
INVENTORY = "all:\n  hosts:\n    localhost: {}\n"
MARKERS = ("MARKER", "MARKER-NEW", "MARKER-NAME", "MARKER-TEMPLATE")


def _write(content: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(content)


def _fifo(path: Path) -> None:
    os.mkfifo(path)  # nobody ever opens it for writing: reading it would wait forever


def _dangling(path: Path) -> None:
    path.symlink_to(path.parent / "gone" / "nowhere.yml")


_RANDOM = random.Random(7)

# (make the file, what its one error line says, the roles it is refused in)
ALL_ROLES = ("playbook", "inventory", "extra-vars")
HOSTILE = [
    pytest.param(_write(ALIAS_BOMB.encode()), "expands to more than 200000 values through aliases", ALL_ROLES,
                 id="alias bomb (a billion laughs)"),
    pytest.param(_write(b'- name: x\n  hosts: localhost\n  vars: {x: !!python/object/apply:os.system ["touch MARKER"]}\n'),
                 "the YAML tag tag:yaml.org,2002:python/object/apply:os.system is not allowed", ALL_ROLES,
                 id="!!python/object/apply:os.system"),
    pytest.param(_write(b'x: !!python/object/new:subprocess.Popen [["touch", "MARKER-NEW"]]\n'),
                 "the YAML tag tag:yaml.org,2002:python/object/new:subprocess.Popen is not allowed", ALL_ROLES,
                 id="!!python/object/new:subprocess.Popen"),
    pytest.param(_write(b"x: !!python/name:os.system\ny: !!python/object/apply:os.system [touch MARKER-NAME]\n"),
                 "the YAML tag tag:yaml.org,2002:python/name:os.system is not allowed", ALL_ROLES,
                 id="!!python/name"),
    pytest.param(_write(b"[" * 10_000 + b"]" * 10_000), ":1:65: nested deeper than 64 levels", ALL_ROLES,
                 id="10,000-deep flow sequence"),
    pytest.param(_write(b"{a: " * 10_000 + b"1" + b"}" * 10_000), ":1:257: nested deeper than 64 levels", ALL_ROLES,
                 id="10,000-deep flow mapping"),
    pytest.param(_write(b"- " * 10_000 + b"x\n"), ":1:129: nested deeper than 64 levels", ALL_ROLES,
                 id="10,000-deep block sequence"),
    pytest.param(_write(b"# " + b"x" * (50 * 1024 * 1024) + b"\n"), "is 52428803 bytes, larger than the limit of 8388608",
                 ALL_ROLES, id="a 50 MB file"),
    pytest.param(_write(bytes(range(256)) * 256), "not a text file (binary data)", ALL_ROLES, id="binary junk"),
    pytest.param(_write(_RANDOM.randbytes(1 << 16)), "not a text file (binary data)", ALL_ROLES, id="random bytes"),
    pytest.param(_write(b"a: 1\n" + bytes(_RANDOM.randrange(128, 256) for _ in range(4096))), ":2:1: not UTF-8 text",
                 ALL_ROLES, id="not UTF-8, no NUL"),
    # an inventory may be a directory (Ansible's inventory/ with group_vars/): refused as the other two only
    pytest.param(lambda path: path.mkdir(), "is a directory, expected a", ("playbook", "extra-vars"),
                 id="a directory where a file should be"),
    pytest.param(_fifo, "is a named pipe (FIFO), expected a", ALL_ROLES, id="a FIFO nobody writes to"),
    pytest.param(_dangling, "no such", ALL_ROLES, id="a dangling symlink"),
]

_COUNT_LINE = re.compile(r"^\d+ errors?(; nothing was run)?$")


def _commands(role: str, hostile: str) -> list[list[str]]:
    """`validate` and `run` with the hostile file in `role` and good files everywhere else."""
    where = {
        "playbook": [hostile, "-i", "inventory.yml"],
        "inventory": ["playbook.yml", "-i", hostile],
        "extra-vars": ["playbook.yml", "-i", "inventory.yml", "-e", f"@{hostile}"],
    }[role]
    return [["validate", *where], ["run", *where]]


def assert_refused(ran: Measured, name: str, expected: str, startup: float) -> None:
    """The promise of point 4 for one refused input."""
    assert ran.code == 2, (ran.out, ran.err)
    assert "Traceback" not in ran.err
    assert ran.out == ""
    lines = ran.err.splitlines()
    naming = [line for line in lines if name in line]
    assert len(naming) == 1 and expected in naming[0], lines
    assert all(_COUNT_LINE.match(line) for line in lines if line not in naming), lines
    assert ran.seconds - startup < TIME_BUDGET_S, f"{ran.seconds:.2f} s, start-up {startup:.2f} s"
    assert ran.peak_mib < MEMORY_BUDGET_MIB, f"{ran.peak_mib:.1f} MiB"


@pytest.fixture
def good_files(tmp_path: Path) -> Path:
    (tmp_path / "playbook.yml").write_text(PLAYBOOK)
    (tmp_path / "inventory.yml").write_text(INVENTORY)
    return tmp_path


def test_the_good_files_pass(good_files: Path) -> None:
    """The control: with nothing hostile, the same commands succeed, so each refusal below is the file's."""
    ran = measure(good_files, "validate", "playbook.yml", "-i", "inventory.yml", "-e", "@inventory.yml")
    assert (ran.code, ran.err) == (0, ""), ran.err
    assert measure(good_files, "run", "playbook.yml", "-i", "inventory.yml").code == 0


@pytest.mark.parametrize("role", ALL_ROLES)
@pytest.mark.parametrize("make, expected, roles", HOSTILE)
def test_hostile_file_is_one_error_line_quickly_and_runs_nothing(
    good_files: Path, startup: float, make: Callable[[Path], None], expected: str, roles: tuple[str, ...], role: str,
    request: pytest.FixtureRequest,
) -> None:
    if role not in roles:
        pytest.skip(f"not an error as the {role}: an inventory may be a directory")
    make(good_files / "hostile.yml")
    for command in _commands(role, "hostile.yml"):
        ran = measure(good_files, *command, timeout=30)
        if ran.seconds - startup >= TIME_BUDGET_S:  # two cores shared with other jobs: the better of two
            ran = min(ran, measure(good_files, *command, timeout=30), key=lambda r: r.seconds)
        assert_refused(ran, "hostile.yml", expected, startup)
        case = request.node.callspec.id
        record("hostile input: seconds beyond start-up / peak MiB",
               f"{case} ({command[0]}): {max(ran.seconds - startup, 0):.3f} s / {ran.peak_mib:.1f} MiB")
    for marker in MARKERS:
        assert not (good_files / marker).exists(), f"{marker} was created: YAML ran code"


NOT_ALLOWED = "not allowed in a template"
SANDBOX_ESCAPES = [
    pytest.param("{{ ''.__class__.__mro__[1].__subclasses__() }}", NOT_ALLOWED, id="__subclasses__ through str's MRO"),
    pytest.param("{{ cycler.__init__.__globals__.os.popen('touch MARKER-TEMPLATE').read() }}", NOT_ALLOWED,
                 id="cycler globals"),
    pytest.param("{{ joiner.__init__.__globals__.os.popen('touch MARKER-TEMPLATE') }}", NOT_ALLOWED, id="joiner globals"),
    pytest.param("{{ namespace.__init__.__globals__.os.popen('touch MARKER-TEMPLATE') }}", NOT_ALLOWED,
                 id="namespace globals"),
    pytest.param("{{ self._TemplateReference__context.cycler.__init__.__globals__.os.popen('touch MARKER-TEMPLATE') }}",
                 NOT_ALLOWED, id="the template's own context"),
    pytest.param("{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}", NOT_ALLOWED,
                 id="a loop over object's subclasses"),
    pytest.param("{{ 'a' * 100000000 }}", NOT_ALLOWED, id="a 100 MB string"),
    pytest.param("{{ ((9 ** 999) ** 999) ** 999 }}", NOT_ALLOWED, id="an integer of a billion digits"),
    # Jinja2's placeholder text: lipsum(999999) wrote for minutes, and its __globals__ lead to os
    pytest.param("{{ lipsum(999999) }}", "'lipsum' is undefined", id="a million paragraphs of lipsum"),
    pytest.param("{{ lipsum.__globals__['os'].popen('touch MARKER-TEMPLATE').read() }}", "'lipsum' is undefined",
                 id="lipsum globals"),
]


@pytest.mark.parametrize("where", ["task option", "play var", "inventory var", "extra var"])
@pytest.mark.parametrize("template, expected", SANDBOX_ESCAPES)
def test_a_template_escaping_the_sandbox_is_a_located_error_and_runs_nothing(
    good_files: Path, startup: float, template: str, expected: str, where: str
) -> None:
    quoted = template.replace("'", "''")
    playbook = PLAYBOOK.replace("file: {path: .}", "file: {path: '{{ evil }}'}")
    extra: list[str] = []
    if where == "task option":
        playbook = PLAYBOOK.replace("file: {path: .}", f"file: {{path: '{quoted}'}}")
    elif where == "play var":
        playbook = playbook.replace("  checks:", f"  vars:\n    evil: '{quoted}'\n  checks:")
    elif where == "inventory var":
        (good_files / "inventory.yml").write_text(f"all:\n  vars:\n    evil: '{quoted}'\n  hosts:\n    localhost: {{}}\n")
    else:
        (good_files / "evil.yml").write_text(f"evil: '{quoted}'\n")
        extra = ["-e", "@evil.yml"]
    (good_files / "playbook.yml").write_text(playbook)
    for command in ("validate", "run"):
        ran = measure(good_files, command, "playbook.yml", "-i", "inventory.yml", *extra)
        assert_refused(ran, "playbook.yml", expected, startup)
    assert not (good_files / "MARKER-TEMPLATE").exists()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can enter (pytest's tmp_path is under a 0700 directory of root's)."""
    path = Path(tempfile.mkdtemp(prefix="ce-agent-reliability-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _as_nobody() -> list[str]:
    """The command prefix that drops root to nobody, or [] when already not root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a file's mode cannot keep root out")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


@pytest.mark.parametrize(
    "role, expected",
    [
        pytest.param("playbook", "Path 'private.yml' is not readable", id="playbook (checked by the argument parser)"),
        pytest.param("inventory", "Path 'private.yml' is not readable", id="inventory (checked by the argument parser)"),
        pytest.param("group_vars", "permission denied reading the variables file", id="a group_vars file"),
        pytest.param("extra-vars", "permission denied reading the extra-vars file", id="extra-vars"),
    ],
)
def test_a_file_the_user_may_not_read(shared_dir: Path, startup: float, role: str, expected: str) -> None:
    (shared_dir / "playbook.yml").write_text(PLAYBOOK)
    (shared_dir / "inventory.yml").write_text(INVENTORY)
    secret = shared_dir / "private.yml"
    hostile = "private.yml"
    if role == "group_vars":  # an inventory directory, one of whose files the user may not read
        (shared_dir / "inv" / "group_vars").mkdir(mode=0o755, parents=True)
        (shared_dir / "inv").chmod(0o755)
        (shared_dir / "inv" / "hosts.yml").write_text(INVENTORY)
        secret = shared_dir / "inv" / "group_vars" / "private.yml"
        role, hostile = "inventory", "inv"
    secret.write_text(INVENTORY)
    secret.chmod(0)
    prefix = _as_nobody()
    for command in _commands(role, hostile):
        ran = measure(shared_dir, *command, prefix=prefix)
        assert_refused(ran, "private.yml", expected, startup)


def test_a_document_at_the_size_limit_stays_within_budget(good_files: Path, startup: float) -> None:
    """The limit is 8 MiB, but PyYAML's pure-Python parser reads ~1 MB/s of plain scalars and ~60,000
    nodes/s: a file just under the limit costs seconds and over 100 MiB. Measured here as an open gap."""
    size = 8 * 1024 * 1024 - 64
    (good_files / "plain.yml").write_text("a: " + "x " * (size // 2) + "\n")
    (good_files / "keys.yml").write_text("".join(f"k{i}: {i}\n" for i in range(600_000))[:size])
    worst = []
    for name in ("plain.yml", "keys.yml"):
        ran = measure(good_files, "validate", "playbook.yml", "-i", "inventory.yml", "-e", f"@{name}", timeout=60)
        assert ran.code in (0, 2) and "Traceback" not in ran.err, ran.err
        worst.append((ran.seconds - startup, ran.peak_mib))
        record("a document just under the 8 MiB limit (open): seconds beyond start-up / peak MiB",
               f"{name}: {ran.seconds - startup:.2f} s / {ran.peak_mib:.1f} MiB")
    if any(seconds >= TIME_BUDGET_S or mib >= MEMORY_BUDGET_MIB for seconds, mib in worst):
        pytest.xfail(f"open: a document under the 8 MiB limit costs {worst} (seconds, MiB); "
                     "the limits in ce_agent/config/yamlfile.py (MAX_BYTES, MAX_NODES) allow it")


def test_startup_figure(startup: float) -> None:
    record("interpreter start-up (python -m ce_agent --version)", f"{startup:.3f} s")
    assert startup < 5
