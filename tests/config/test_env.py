"""``${env.NAME}`` substitution before parsing."""

from __future__ import annotations

from .support import load, one_problem

MODEL = """
models:
  m:
    cmd: serve --port ${PORT}
"""


def test_env_values_are_inserted_before_parsing() -> None:
    """Env macros work inside flow lists and in any value."""
    config = load("apiKeys: [${env.KEY_A}, ${env.KEY_B}]\n" + MODEL,
                  env={"KEY_A": "sk-1", "KEY_B": "sk-2"})
    assert config.api_keys == ("sk-1", "sk-2")


def test_unset_env_var_is_an_error() -> None:
    """A reference to an unset variable names it."""
    line = one_problem("logLevel: ${env.NOPE_X}\n")
    assert line == "<string>: environment variable 'NOPE_X' is not set"


def test_env_in_comment_is_not_required() -> None:
    """References inside ``#`` comments need not exist."""
    config = load("# uses ${env.NOT_SET_ANYWHERE}\nlogLevel: debug  # ${env.ALSO_UNSET}\n")
    assert config.log_level == "debug"


def test_hash_inside_quotes_is_not_a_comment() -> None:
    """A ``#`` inside a quoted string does not hide a later reference."""
    line = one_problem('logTimeFormat: "a # b ${env.MISSING_Q}"\n')
    assert line == "<string>: environment variable 'MISSING_Q' is not set"


def test_newline_in_env_value_is_rejected() -> None:
    """Values with newlines cannot be substituted into YAML."""
    line = one_problem("logLevel: ${env.MULTI}\n", env={"MULTI": "a\nb"})
    assert line.startswith("<string>: environment variable 'MULTI' contains newlines")


def test_quotes_and_backslashes_are_escaped_for_double_quoted_strings() -> None:
    """``"`` and ``\\`` are escaped so double-quoted scalars round-trip."""
    config = load('apiKeys: ["${env.K}"]\n', env={"K": 'a"b\\c'})
    assert config.api_keys == ('a"b\\c',)


def test_env_macros_expand_inside_macros() -> None:
    """An env value can feed a regular macro (the SPEC's models_dir example)."""
    config = load("""
        macros:
          dir: "${env.HOME}/models"
        models:
          m:
            cmd: serve ${dir}/m.gguf --port ${PORT}
    """, env={"HOME": "/home/u"})
    assert config.models["m"].cmd == "serve /home/u/models/m.gguf --port 5800"
