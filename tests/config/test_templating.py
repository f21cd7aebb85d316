"""Templates: Jinja2 in a sandbox, variables that refer to variables, env and file() lookups as secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from ce_agent.config.templating import Templar, TemplateError, has_template

VARS = {
    "port": 8080,
    "host": "web1",
    "url": "http://{{ host }}:{{ port }}/",
    "loop_a": "{{ loop_b }}",
    "loop_b": "{{ loop_a }}",
    "items": ["a", "b"],
}


def render(value: object, environ: dict[str, str] | None = None) -> tuple[object, list[str]]:
    secrets: list[str] = []
    templar = Templar(environ or {}, secrets.append)
    return templar.render(value, templar.scope([VARS])), secrets


@pytest.mark.parametrize(
    "value, expected",
    [
        pytest.param("plain", "plain", id="no template, untouched"),
        pytest.param("{{ port }}", 8080, id="one expression keeps its type"),
        pytest.param("port {{ port }}", "port 8080", id="text around makes a string"),
        pytest.param("{{ url }}", "http://web1:8080/", id="variables refer to variables"),
        pytest.param("{{ port + 1 }}", 8081, id="expressions"),
        pytest.param("{{ items | join(',') }}", "a,b", id="filters"),
        pytest.param("{% if port > 80 %}high{% endif %}", "high", id="statements"),
        pytest.param({"k": ["{{ host }}", 1]}, {"k": ["web1", 1]}, id="inside mappings and lists"),
        pytest.param("{{ missing | default('x') }}", "x", id="default filter"),
    ],
)
def test_render(value: object, expected: object) -> None:
    assert render(value)[0] == expected


@pytest.mark.parametrize(
    "value, message",
    [
        pytest.param("{{ nope }}", "undefined variable: 'nope' is undefined", id="undefined variable"),
        pytest.param("x {{ nope.attr }}", "undefined variable: 'nope' is undefined", id="undefined inside text"),
        pytest.param("{{ loop_a }}", "variables refer to each other in a loop: loop_a -> loop_b -> loop_a", id="loop"),
        pytest.param("{{ port", "template syntax error", id="syntax error"),
        pytest.param("{{ ''.__class__.__mro__ }}", "not allowed in a template", id="sandbox"),
        pytest.param("{{ env.NOT_SET_ANYWHERE }}", "environment variable NOT_SET_ANYWHERE is not set", id="missing env"),
        pytest.param("{{ env['NOT_SET_ANYWHERE'] }}", "environment variable NOT_SET_ANYWHERE is not set", id="missing env item"),
        pytest.param("{{ file('/nonexistent/x') }}", "file('/nonexistent/x'): No such file or directory", id="missing file"),
        pytest.param("{{ 1 / 0 }}", "template error: ZeroDivisionError", id="a failing expression"),
    ],
)
def test_errors(value: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render(value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "template",
    [
        pytest.param("{{ env.PW }}", id="attribute"),
        pytest.param("{{ env['PW'] }}", id="item"),
        pytest.param("{{ env.get('PW') }}", id="get"),
        pytest.param("{{ env.PW | urlquote }}", id="url-quoted"),
    ],
)
def test_every_way_to_read_env_reports_the_secret(template: str) -> None:
    from ce_agent.redact import Redactor

    redactor = Redactor()
    templar = Templar({"PW": "CA:NA@RY/AT99"}, redactor.add_lookup)
    value = templar.render(f"json://u:{template}@127.0.0.1/", templar.scope([{}]))
    assert redactor.scrub(str(value)) == "json://u:****@127.0.0.1/"
    for piece in ("RY/AT99", "AT99@127", "CA:NA"):  # also when a URL parser splits the unencoded value
        assert "AT99" not in redactor.scrub(piece) and "NA@RY" not in redactor.scrub(piece)


def test_env_cannot_be_listed() -> None:
    with pytest.raises(TemplateError):
        render("{{ env.items() | list }}", {"PW": "x"})


def test_short_numbers_from_env_stay_readable() -> None:
    from ce_agent.redact import Redactor

    redactor = Redactor()
    templar = Templar({"PORT": "8080", "PIN": "123456789"}, redactor.add_lookup)
    value = templar.render("{{ env.PORT }}/{{ env.PIN }}", templar.scope([{}]))
    assert redactor.scrub(value) == "8080/****"


def test_env_and_file_values_are_reported_as_secrets(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret-from-file\n")
    value, secrets = render(f"{{{{ env.PW }}}}/{{{{ file('{tmp_path / 'token'}') }}}}", {"PW": "s3cret-from-env"})
    assert value == "s3cret-from-env/s3cret-from-file"
    assert secrets == ["s3cret-from-env", "s3cret-from-file"]


@pytest.mark.parametrize(
    "value, expected",
    [
        pytest.param("a {{ b }}", True, id="expression"),
        pytest.param("{% if x %}{% endif %}", True, id="statement"),
        pytest.param({"a": ["{# c #}"]}, True, id="nested comment"),
        pytest.param("no braces", False, id="plain"),
        pytest.param(42, False, id="number"),
    ],
)
def test_has_template(value: object, expected: bool) -> None:
    assert has_template(value) is expected


def test_jinja_is_not_imported_without_templates() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from ce_agent.config.templating import Templar; t = Templar({}); "
        "t.render({'a': 'plain', 'b': [1, 'x']}, t.scope([{}])); print('jinja2' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("name, masked", [
    pytest.param("SMTP_PASSWORD", True, id="any variable is a secret"),
    pytest.param("CREDENTIALS_DIRECTORY", False, id="systemd's credentials directory names a place"),
    pytest.param("HOME", False, id="a home directory names a place"),
])
def test_env_values_are_secrets_except_those_naming_places(name: str, masked: bool) -> None:
    from ce_agent.config.templating import EnvironmentVariables

    seen: list[str] = []
    assert EnvironmentVariables({name: "/run/credentials/ce-agent.service"}, seen.append)[name]
    assert seen == (["/run/credentials/ce-agent.service"] if masked else [])
