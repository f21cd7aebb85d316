"""packaging/ansible: the ce_agent role and its example site playbook, run by a real ansible-playbook.

Everything runs against localhost with `-c local`, every path of the role pointed into a temporary
directory. There is no systemd as PID 1 here, so the role's systemctl is a stand-in first on PATH that
keeps the unit's state in a file and logs every call: the tests see what the handlers ask for.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

ANSIBLE = ROOT / "packaging" / "ansible"
SITE = ANSIBLE / "site.yml"
PLAYBOOK_BIN = Path(sys.executable).parent / "ansible-playbook"
RUN_TIMEOUT_S = 300  # a first run creates a virtualenv and pip-installs ce-agent with its dependencies

pytestmark = pytest.mark.skipif(not PLAYBOOK_BIN.exists(), reason="ansible-core is not installed (pip install -e '.[test]')")

# The systemctl the role's ansible.builtin.systemd_service finds first on PATH: the unit is known
# ("loaded") while its file exists in $FAKE_SYSTEMCTL_UNITS; enable/start/... change a JSON state.
FAKE_SYSTEMCTL = '''#!{python}
import json, os, sys
home = os.environ["FAKE_SYSTEMCTL_HOME"]
state_path = os.path.join(home, "state.json")
argv = [a for a in sys.argv[1:] if a not in ("-l", "--no-block")]
with open(os.path.join(home, "calls.log"), "a") as log:
    log.write(" ".join(argv) + "\\n")
state = json.load(open(state_path)) if os.path.exists(state_path) else {{"enabled": False, "active": False}}
verb, unit = (argv + ["", ""])[:2]
loaded = os.path.exists(os.path.join(os.environ["FAKE_SYSTEMCTL_UNITS"], unit)) if unit else False
if verb == "daemon-reload":
    pass
elif verb == "show":
    print(f"Id={{unit}}")
    print(f"LoadState={{'loaded' if loaded else 'not-found'}}")
    print(f"ActiveState={{'active' if state['active'] else 'inactive'}}")
    print(f"UnitFileState={{'enabled' if state['enabled'] else 'disabled'}}")
elif verb == "is-enabled":
    print("enabled" if state["enabled"] else "disabled")
    sys.exit(0 if state["enabled"] else 1)
elif verb == "is-active":
    print("active" if state["active"] else "inactive")
    sys.exit(0 if state["active"] else 3)
elif not loaded:
    print(f"Failed to {{verb}} {{unit}}: Unit {{unit}} not found.", file=sys.stderr)
    sys.exit(5)
elif verb in ("enable", "disable"):
    state["enabled"] = verb == "enable"
elif verb in ("start", "restart", "stop"):
    state["active"] = verb != "stop"
elif verb == "reload":
    if not state["active"]:
        print(f"{{unit}} is not active, cannot reload.", file=sys.stderr)
        sys.exit(1)
else:
    print(f"fake systemctl: unknown command {{argv}}", file=sys.stderr)
    sys.exit(2)
json.dump(state, open(state_path, "w"))
'''

# The configuration the deployed tree starts from; tests change it with extra vars, then put it back.
BASE_INVENTORY = {
    "all": {
        "vars": {"channels": {
            "console": {"console": {}},
            # ce-agent's own template, to be deployed as it is (!unsafe in the Ansible inventory below)
            "mail": "mailtos://alerts:{{ file(env.CREDENTIALS_DIRECTORY ~ '/smtp') }}@smtp.example.com?to=ops@example.com",
        }},
        "hosts": {"localhost": {}},
    },
}
BASE_PLAYBOOK = [{
    "name": "Local health",
    "hosts": "localhost",
    "checks": [{"name": "Root disk", "disk": {"path": "/"}, "schedule": "*/5 * * * *", "notify": ["console", "mail"]}],
}]
SERVICE_ACTIONS = ("daemon-reload", "enable", "disable", "start", "stop", "restart", "reload")


class UnsafeDumper(yaml.SafeDumper):
    """Writes strings holding "{{" with Ansible's !unsafe tag, so Ansible leaves ce-agent's templates alone."""


UnsafeDumper.add_representer(
    str, lambda d, s: d.represent_scalar("!unsafe" if "{{" in s else "tag:yaml.org,2002:str", s))


@dataclass
class Played:
    """A finished ansible-playbook run: exit status, output, the recap's counts and each task's statuses."""

    code: int
    out: str
    recap: dict[str, int]
    tasks: list[tuple[str, str]] = field(default_factory=list)  # (task or handler name, status) in order

    def changed(self) -> list[str]:
        return [name for name, status in self.tasks if status == "changed"]

    def statuses(self, task: str) -> list[str]:
        return [status for name, status in self.tasks if name == task]


def parse_output(code: int, out: str) -> Played:
    recap_line = re.search(r"^localhost\s+:\s+(.*)$", out, re.MULTILINE)
    recap = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", recap_line[1])} if recap_line else {}
    tasks, current = [], ""
    for line in out.splitlines():
        header = re.match(r"^(?:TASK|RUNNING HANDLER) \[(?:ce_agent : )?(.*?)\] \**$", line)
        if header:
            current = header[1]
            continue
        status = re.match(r"^(ok|changed|skipping|fatal|failed): \[localhost\]", line)
        if status and current:
            tasks.append((current, status[1]))
    return Played(code, out, recap, tasks)


# The role's virtualenv_command in the tests: a venv whose .pth file adds a folder linking the
# dependencies installed in the test's own venv (every distribution but ce-agent, its plugin and pip),
# so `pip install --no-index` of the ce-agent wheel finds them installed.
MAKE_VENV = """\
import importlib.metadata, pathlib, sys, sysconfig, venv
target = pathlib.Path(sys.argv[-1])
venv.create(target, with_pip=True)
deps = target / "offline-deps"
deps.mkdir()
mine = {"ce-agent", "ce_agent", "ce-agent-repo-health", "ce_agent_repo_health", "pip"}
site = pathlib.Path(sysconfig.get_paths()["purelib"])
for dist in importlib.metadata.distributions(path=[str(site)]):
    if dist.metadata["Name"] in mine or dist.metadata["Name"].replace("-", "_") in mine:
        continue
    for top in {f.parts[0] for f in dist.files or [] if f.parts and f.parts[0] != ".."}:
        if (site / top).exists() and not (deps / top).exists() and not top.endswith(".pth"):
            (deps / top).symlink_to(site / top)
(purelib,) = target.glob("lib/python*/site-packages")
(purelib / "offline-deps.pth").write_text(str(deps) + "\\n")
"""


class Tree:
    """A fake root for the role: its paths, the Ansible inventory that points the role at them, the
    stand-in systemctl, and ansible-playbook run with no user configuration."""

    def __init__(self, base: Path, wheel: Path | None) -> None:
        self.base = base
        self.prefix = base / "opt" / "ce-agent"
        self.config = base / "etc" / "ce-agent"
        self.units = base / "etc" / "systemd" / "system"
        self.systemctl_home = base / "systemctl"
        self.systemctl_home.mkdir(parents=True)
        fake_bin = base / "bin"
        fake_bin.mkdir()
        fake = fake_bin / "systemctl"
        fake.write_text(FAKE_SYSTEMCTL.format(python=sys.executable))
        fake.chmod(0o755)
        ansible_home = base / "ansible-home"
        (ansible_home / "tmp").mkdir(parents=True)
        (base / "ansible.cfg").write_text("")
        self.env = {
            **os.environ,
            "PATH": f"{fake_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "FAKE_SYSTEMCTL_HOME": str(self.systemctl_home),
            "FAKE_SYSTEMCTL_UNITS": str(self.units),
            # no user or project configuration, and nothing written under ~/.ansible
            "ANSIBLE_CONFIG": str(base / "ansible.cfg"),
            "ANSIBLE_HOME": str(ansible_home),
            "ANSIBLE_LOCAL_TEMP": str(ansible_home / "tmp"),
            "ANSIBLE_REMOTE_TEMP": str(ansible_home / "remote-tmp"),
            "ANSIBLE_COLLECTIONS_PATH": str(ansible_home / "collections"),
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_STDOUT_CALLBACK": "default",
            # the role needs no facts once system packages are off: a second less per run
            "ANSIBLE_GATHERING": "explicit",
            # the ce-agent commands the role runs must not touch the state of this machine's agent
            "CE_AGENT_STATE_DIR": str(base / "agent-state"),
        }
        for name in ("CE_AGENT_SERVICE_ROOT", "ANSIBLE_CALLBACKS_ENABLED", "ANSIBLE_INVENTORY", "ANSIBLE_ROLES_PATH"):
            self.env.pop(name, None)
        self.inventory = base / "hosts.yml"
        role_vars: dict[str, Any] = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "ce_agent_become": False,
            "ce_agent_python": sys.executable,
            "ce_agent_prefix": str(self.prefix),
            "ce_agent_config_dir": str(self.config),
            "ce_agent_systemd_dir": str(self.units),
            "ce_agent_install_system_packages": False,
            # the current user owns the files: the test also runs without root
            "ce_agent_owner": _user(),
            "ce_agent_credentials": {"smtp": "s3cret-password"},
            "ce_agent_inventory": {"content": BASE_INVENTORY},
            "ce_agent_playbooks": [{"name": "site.yml", "content": BASE_PLAYBOOK}],
        }
        # offline: the role's virtualenv sees this venv's dependencies (not ce-agent) and pip may not use an index,
        # so a deployment in the tests never talks to a package registry
        make_venv = base / "make_venv.py"
        make_venv.write_text(MAKE_VENV)
        role_vars["ce_agent_virtualenv_command"] = f"{sys.executable} {make_venv}"
        self.env["PIP_NO_INDEX"] = "1"  # not ce_agent_pip_extra_args: with those, pip in --check always says changed
        if wheel is not None:
            # PEP 508 "name @ URL": pip's --check can then tell that it is installed (a bare path it cannot)
            role_vars["ce_agent_package"] = f"ce-agent @ {wheel.as_uri()}"
        self.inventory.write_text(yaml.dump(
            {"ce_agents": {"hosts": {"localhost": None}, "vars": role_vars}}, Dumper=UnsafeDumper, sort_keys=False))
        self.runs = 0

    def play(self, *args: str, extra: dict[str, Any] | None = None, playbook: Path = SITE) -> Played:
        self.runs += 1
        argv = [str(PLAYBOOK_BIN), "-i", str(self.inventory), str(playbook), *args]
        if extra is not None:
            extra_file = self.base / f"extra-{self.runs}.yml"
            extra_file.write_text(yaml.dump(extra, Dumper=UnsafeDumper, sort_keys=False))
            argv += ["-e", f"@{extra_file}"]
        proc = subprocess.run(argv, cwd=self.base, env=self.env, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)
        return parse_output(proc.returncode, proc.stdout + proc.stderr)

    def systemctl_calls(self) -> list[str]:
        """The stand-in systemctl's calls since the last time they were read (then forgotten)."""
        log = self.systemctl_home / "calls.log"
        if not log.exists():
            return []
        calls = [line.replace("'", "") for line in log.read_text().splitlines()]
        log.unlink()
        return calls

    def service_actions(self) -> list[str]:
        """What systemctl was asked to change (not the queries), in order."""
        return [c for c in self.systemctl_calls() if c.split()[0] in SERVICE_ACTIONS]

    def service_state(self) -> dict[str, bool]:
        return json.loads((self.systemctl_home / "state.json").read_text())


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def assert_ok(played: Played) -> None:
    assert played.code == 0 and played.recap.get("failed") == 0 and played.recap.get("unreachable") == 0, \
        played.out[-6000:]


def build_wheel(project: Path, packages: str, into: Path) -> Path:
    """A wheel of a project in this checkout, built from a copy (a build writes build/ into its source)."""
    source = into / "source" / project.name
    shutil.copytree(project / packages, source / packages, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(project / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(into / "dist"), str(source)],
                   check=True, capture_output=True, timeout=180)
    return next((into / "dist").glob(f"{packages}-*.whl"))


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Wheels of ce-agent and of the repo-health plugin, from this checkout.

    Wheels, not source directories: pip reinstalls a directory on every run, a wheel of the
    installed version it leaves alone, which is what makes the role idempotent."""
    base = tmp_path_factory.mktemp("wheels")
    return {
        "ce-agent": build_wheel(ROOT, "ce_agent", base),
        "ce-agent-repo-health": build_wheel(ROOT / "plugins" / "ce-agent-repo-health", "ce_agent_repo_health", base),
    }


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, wheels: dict[str, Path]) -> tuple[Tree, Played]:
    """One real run of site.yml: a virtualenv with ce-agent from the wheel, the configuration, the unit."""
    tree = Tree(tmp_path_factory.mktemp("deployed"), wheels["ce-agent"])
    first = tree.play()
    assert_ok(first)
    return tree, first


# --- without installing anything ---------------------------------------------------------------------


@pytest.mark.parametrize("inventory", [
    pytest.param(ANSIBLE / "inventory.example.yml", id="example inventory"),
    pytest.param(None, id="test inventory"),
])
def test_site_playbook_passes_syntax_check(tmp_path: Path, inventory: Path | None) -> None:
    tree = Tree(tmp_path, None)
    if inventory is not None:
        tree.inventory = inventory
    played = tree.play("--syntax-check")
    assert played.code == 0, played.out
    assert "playbook: " in played.out


def test_check_mode_on_a_fresh_host_changes_nothing(tmp_path: Path) -> None:
    tree = Tree(tmp_path, None)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    played = tree.play("--check", "--diff")
    assert_ok(played)
    assert played.recap["changed"] > 0, "a fresh host would change: the virtualenv, the files"
    # nothing written: no prefix, no configuration, no unit, and no systemctl call that changes anything
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if not {"ansible-home", "systemctl"} & set(p.parts))
    assert [p for p in after if p not in before and not p.name.startswith("extra-")] == []
    assert tree.service_actions() == []
    assert "the unit is rendered once ce-agent and its configuration are installed" in played.out


@pytest.mark.parametrize("extra, message", [
    pytest.param({"ce_agent_playbooks": "site.yml"}, "ce_agent_playbooks", id="playbooks not a list"),
    pytest.param({"ce_agent_service_state": "running"}, "ce_agent_service_state", id="unknown service state"),
    pytest.param({"ce_agent_playbooks": [{"name": "a.yml", "content": [], "src": "a.yml"}]},
                 "exactly one of content, src or template", id="two sources"),
    pytest.param({"ce_agent_playbooks": [{"name": "../a.yml", "content": []}]},
                 "needs a relative name", id="name outside the config directory"),
], )
def test_bad_role_variables_fail_before_anything_changes(tmp_path: Path, extra: dict[str, Any], message: str) -> None:
    tree = Tree(tmp_path, None)
    played = tree.play("--check", extra=extra)
    assert played.code != 0 and played.recap.get("failed") == 1, played.out[-4000:]
    assert message in played.out
    assert played.recap["changed"] == 0


# --- a real deployment into a temporary tree ---------------------------------------------------------


def test_first_run_installs_configures_and_starts(deployed: tuple[Tree, Played]) -> None:
    tree, first = deployed
    # the virtualenv's ce-agent runs and is the wheel's version
    version = subprocess.run([str(tree.prefix / "venv" / "bin" / "ce-agent"), "--version"],
                             capture_output=True, text=True, timeout=60, env=tree.env)
    assert version.returncode == 0, version.stderr
    # the files hold the data given, ce-agent's own {{ ... }} untouched by Ansible
    assert yaml.safe_load((tree.config / "inventory.yml").read_text()) == BASE_INVENTORY
    assert yaml.safe_load((tree.config / "site.yml").read_text()) == BASE_PLAYBOOK
    assert stat.S_IMODE((tree.config / "site.yml").stat().st_mode) == 0o644
    secret = tree.config / "credentials" / "smtp"
    assert secret.read_text() == "s3cret-password"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert "s3cret-password" not in first.out
    # the unit names the installed files and the secret; the service is enabled and started, once
    unit = (tree.units / "ce-agent.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start == (f"ExecStart={tree.prefix}/venv/bin/ce-agent agent {tree.config}/site.yml "
                          f"-i {tree.config}/inventory.yml")
    assert f"LoadCredential=smtp:{secret}" in unit.splitlines()
    assert tree.service_state() == {"enabled": True, "active": True}
    actions = tree.service_actions()
    assert actions[0] == "daemon-reload" and actions.count("start ce-agent.service") == 1, actions
    assert not any(a.startswith(("restart", "reload")) for a in actions), "a fresh start needs no restart"


def test_unit_is_the_one_ce_agent_service_install_writes(deployed: tuple[Tree, Played], tmp_path: Path) -> None:
    tree, _ = deployed
    root = tmp_path / "root"
    installer = subprocess.run(
        [str(tree.prefix / "venv" / "bin" / "ce-agent"), "service", "install", "--systemd", "--no-start",
         "-p", str(tree.config / "site.yml"), "-i", str(tree.config / "inventory.yml"),
         "--credential", f"smtp={tree.config / 'credentials' / 'smtp'}"],
        capture_output=True, text=True, timeout=60, env={**tree.env, "CE_AGENT_SERVICE_ROOT": str(root)})
    assert installer.returncode == 0, installer.stderr
    written = root / "etc" / "systemd" / "system" / "ce-agent.service"
    assert (tree.units / "ce-agent.service").read_bytes() == written.read_bytes()
    tree.systemctl_calls()  # the installer's own daemon-reload


@pytest.mark.parametrize("args", [
    pytest.param((), id="run"),
    pytest.param(("--check", "--diff"), id="check"),
])
def test_second_run_changes_nothing(deployed: tuple[Tree, Played], args: tuple[str, ...]) -> None:
    tree, _ = deployed
    tree.systemctl_calls()
    again = tree.play(*args)
    assert_ok(again)
    assert again.recap["changed"] == 0, again.changed()
    assert tree.service_actions() == []


@pytest.mark.parametrize("extra, changed_file, actions", [
    pytest.param({"ce_agent_playbooks": [{"name": "site.yml", "content": [
        {**BASE_PLAYBOOK[0], "checks": [*BASE_PLAYBOOK[0]["checks"], {"name": "Memory", "memory": {}}]}]}]},
        "site.yml", ["reload ce-agent.service"], id="playbook changed: reload"),
    pytest.param({"ce_agent_listen": "127.0.0.1:9999"}, "",
                 ["daemon-reload", "daemon-reload", "restart ce-agent.service"], id="unit changed: restart"),
    pytest.param({"ce_agent_credentials": {"smtp": "another-password"}}, "",
                 ["daemon-reload", "restart ce-agent.service"], id="secret changed: restart"),
    pytest.param({"ce_agent_plugins": ["ce-agent-repo-health @ {wheel}"]}, "",
                 ["daemon-reload", "restart ce-agent.service"], id="plugin installed: restart"),
    pytest.param({"ce_agent_service_state": "stopped", "ce_agent_playbooks": [
        {"name": "site.yml", "content": [{**BASE_PLAYBOOK[0], "name": "Renamed"}]}]},
        "site.yml", ["stop ce-agent.service"], id="stopped on purpose: no reload starts it"),
])
def test_a_change_reloads_or_restarts_and_a_rerun_restores(
        deployed: tuple[Tree, Played], wheels: dict[str, Path], extra: dict[str, Any], changed_file: str,
        actions: list[str]) -> None:
    tree, _ = deployed
    if "ce_agent_plugins" in extra:
        extra = {"ce_agent_plugins": [extra["ce_agent_plugins"][0].format(wheel=wheels["ce-agent-repo-health"].as_uri())]}
    tree.systemctl_calls()
    before = {p.name: p.read_text() for p in tree.config.glob("*.yml")}
    changed = tree.play(extra=extra)
    assert_ok(changed)
    assert tree.service_actions() == actions, changed.out[-4000:]
    assert [n for n, t in before.items() if (tree.config / n).read_text() != t] == ([changed_file] if changed_file else [])
    if "ce_agent_plugins" in extra:
        listed = subprocess.run([str(tree.prefix / "venv" / "bin" / "ce-agent"), "plugins", "list"],
                                capture_output=True, text=True, timeout=60, env=tree.env)
        assert "git_repo" in listed.stdout, listed.stdout + listed.stderr
    # back to the base configuration, with a running agent
    restored = tree.play()
    assert_ok(restored)
    assert {p.name: p.read_text() for p in tree.config.glob("*.yml")} == before
    assert tree.service_state()["active"]


@pytest.mark.parametrize("playbook, error", [
    pytest.param([{**BASE_PLAYBOOK[0], "checks": [{"name": "Disk", "disk": {"path": "/"}, "notify": ["pager"]}]}],
                 r"site\.yml:\d+:\d+: unknown channel 'pager'", id="unknown channel"),
    pytest.param("- name: [unclosed\n", r"site\.yml:\d+:\d+", id="not YAML"),
])
def test_an_invalid_configuration_never_reaches_the_agent(
        deployed: tuple[Tree, Played], playbook: Any, error: str) -> None:
    tree, _ = deployed
    tree.systemctl_calls()
    live = (tree.config / "site.yml").read_text()
    broken = tree.play(extra={"ce_agent_playbooks": [{"name": "site.yml", "content": playbook}]})
    assert broken.code != 0 and broken.recap["failed"] == 1
    assert broken.statuses("Validate the staged configuration with ce-agent validate") == ["fatal"], broken.changed()
    assert re.search(error, broken.out), broken.out[-4000:]
    assert (tree.config / "site.yml").read_text() == live
    assert tree.service_actions() == []
    # the next good run validates again and leaves the agent alone: the live files never changed
    restored = tree.play()
    assert_ok(restored)
    assert restored.changed() == ["Stage the files that come from content or a template"]
    assert tree.service_actions() == []


def test_group_vars_and_verbatim_files_are_staged_with_the_inventory(deployed: tuple[Tree, Played]) -> None:
    """A group_vars file lives next to the inventory: validated with it, installed with it."""
    tree, _ = deployed
    script = tree.base / "check_thing.sh"
    script.write_text("#!/bin/sh\necho 'OK - thing | things=1'\n")
    extra = {
        "ce_agent_config_files": [
            {"name": "group_vars/all.yml", "content": {"disk_path": "/"}},
            {"name": "scripts/check_thing.sh", "src": str(script), "mode": "0755"},
        ],
        "ce_agent_playbooks": [{"name": "site.yml", "content": [{**BASE_PLAYBOOK[0], "checks": [
            {"name": "Disk", "disk": {"path": "{{ disk_path }}"}},
            {"name": "Thing", "command": {"argv": [str(tree.config / "scripts" / "check_thing.sh")]}},
        ]}]}],
    }
    played = tree.play(extra=extra)
    assert_ok(played)
    assert yaml.safe_load((tree.config / "group_vars" / "all.yml").read_text()) == {"disk_path": "/"}
    installed = tree.config / "scripts" / "check_thing.sh"
    assert installed.read_bytes() == script.read_bytes()
    assert stat.S_IMODE(installed.stat().st_mode) == 0o755
    assert "{{ disk_path }}" in (tree.config / "site.yml").read_text()
    # without group_vars the playbook no longer validates: it was validated with them
    extra["ce_agent_config_files"] = extra["ce_agent_config_files"][1:]
    shutil.rmtree(tree.prefix / "staged-config" / "group_vars")
    broken = tree.play(extra=extra)
    assert broken.recap.get("failed") == 1 and "disk_path" in broken.out, broken.out[-3000:]
    assert_ok(tree.play())
    tree.systemctl_calls()
