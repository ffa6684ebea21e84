"""A hand-edited token file is checked entry by entry: a missing hash was a KeyError traceback at start (and a 500
for every request while serving), and ``"models": "lung"`` became the models 'l', 'u', 'n', 'g'. While serving, a file
edited into an invalid state keeps the tokens read before."""

from __future__ import annotations

import json
import os

import pytest

from medanomaly.deploy.service.tokens import TokenStore, new_token
from medanomaly.errors import InputError


@pytest.mark.parametrize(("entry", "reason"), [
    ({"id": "a", "models": ["*"]}, "'sha256' must be 64 hex digits"),
    ({"sha256": 5}, "'sha256' must be 64 hex digits"),
    ("not a mapping", "'sha256' must be 64 hex digits"),
    ({"sha256": "ab" * 32, "models": "lung"}, "'models' must be a list of model names"),
    ({"sha256": "ab" * 32, "models": [""]}, "'models' must be a list of model names"),
    ({"sha256": "ab" * 32, "all_studies": "yes"}, "'all_studies' must be true or false"),
])  # fmt: skip
def test_a_bad_entry_is_one_line_naming_it(tmp_path, entry, reason):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [{"sha256": "cd" * 32}, entry]}))
    with pytest.raises(InputError, match=rf"tokens\.json: token 2: {reason}"):
        TokenStore(path)
    with pytest.raises(InputError, match="token 2"):
        new_token(path)


def test_while_serving_a_broken_edit_keeps_the_tokens_read_before(tmp_path, caplog):
    path = tmp_path / "tokens.json"
    token = new_token(path)
    store = TokenStore(path)
    path.write_text(json.dumps({"tokens": [{"id": "x"}]}))
    os.utime(path, (1, 1))  # a changed modification time: the store reads the file again
    assert store.check(token) is not None
    assert "token 1: 'sha256' must be 64 hex digits" in caplog.text and "keeping the 1 token(s)" in caplog.text


def test_tokens_are_listed_without_secrets_and_revoked_at_once(tmp_path):
    """There was no way to see or revoke a token but editing the JSON by hand (a leaked token stayed valid, or the
    file was broken). `token list` shows ids, models and dates; `token revoke ID` removes one, and a running service
    (its TokenStore) refuses it from the next request; `token new` says the id on standard error, the token alone on
    standard output."""
    import time

    from typer.testing import CliRunner

    from medanomaly.cli.app import app
    from medanomaly.deploy.service.tokens import list_tokens, revoke_token

    path = tmp_path / "tokens.json"
    first = new_token(path, models=["lung"])
    result = CliRunner().invoke(app, ["token", "new", "--tokens", str(path)])
    second, = result.stdout.split()
    listed = list_tokens(path)
    assert [e["models"] for e in listed] == [["lung"], ["*"]] and f"token id {listed[1]['id']}" in result.stderr
    shown = CliRunner().invoke(app, ["token", "list", "--tokens", str(path)]).stdout
    assert listed[0]["id"] in shown and first not in shown and second not in shown and "sha" not in shown
    store = TokenStore(path)
    assert store.check(first) and store.check(second)
    time.sleep(0.01)  # a new modification time
    revoke_token(path, listed[0]["id"])
    assert store.check(first) is None and store.check(second), "the running store refuses it at once"
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    with pytest.raises(InputError, match="no token with id 'nope'"):
        revoke_token(path, "nope")
    failed = CliRunner().invoke(app, ["token", "revoke", "nope", "--tokens", str(path)])
    assert failed.exit_code != 0
