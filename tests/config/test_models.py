"""``models.<id>``: defaults, inheritance, validation, aliases, filters."""

from __future__ import annotations

from .support import load, one_problem, problems


def test_defaults_and_inheritance() -> None:
    """ttl -1 inherits globalTTL, unloadTimeout 0 inherits, hct min 15 copied to models."""
    config = load("""
        healthCheckTimeout: 5
        globalTTL: 120
        unloadTimeout: 0
        sendLoadingState: true
        models:
          a:
            cmd: s ${PORT}
          b:
            cmd: s ${PORT}
            ttl: 0
            unloadTimeout: 3
            sendLoadingState: false
            healthCheckTimeout: 999
    """)
    a, b = config.models["a"], config.models["b"]
    assert config.health_check_timeout == 15 and a.health_check_timeout == 15
    assert b.health_check_timeout == 15
    assert (a.ttl, b.ttl) == (120, 0)
    assert config.unload_timeout == 10 and (a.unload_timeout, b.unload_timeout) == (10, 3)
    assert (a.send_loading_state, b.send_loading_state) == (True, False)
    assert a.check_endpoint == "/health" and a.concurrency_limit == 10
    assert a.proxy == "http://localhost:5800"


def test_all_model_keys() -> None:
    """Every documented model key lands in its ModelConfig field."""
    config = load("""
        models:
          m:
            cmd: s ${PORT}
            cmdStop: stop ${PID}
            env: ["A=1", "B=2", "A=3"]
            checkEndpoint: " none "
            unlisted: true
            useModelName: upstream/name
            name: "  Pretty  "
            description: A model
            concurrencyLimit: 3
            compat: {ignoreWebsockets: true}
            timeouts: {connect: 5, keepalive: 0, responseHeader: 60, tlsHandshake: 2,
                       expectContinue: 3, idleConn: 4}
            capabilities: {in: [text, image], out: [text], tools: true, context: 8192}
    """)
    m = config.models["m"]
    assert m.cmd_stop == "stop ${PID}" and m.env_dict() == {"A": "3", "B": "2"}
    assert m.health_check_disabled and m.unlisted and m.use_model_name == "upstream/name"
    assert m.name == "Pretty" and m.description == "A model" and m.concurrency_limit == 3
    assert m.ignore_websockets
    t = m.timeouts
    assert (t.connect, t.keepalive, t.response_header, t.tls_handshake, t.expect_continue,
            t.idle_conn) == (5, 0, 60, 2, 3, 4)
    c = m.capabilities
    assert c.input == ("text", "image") and c.output == ("text",) and c.tools
    assert c.context == 8192 and not c.reranker


def test_negative_ttl_and_unload_timeout() -> None:
    """ttl below -1 and negative unloadTimeout are errors with the key path."""
    found = problems("""
        models:
          llama:
            cmd: s ${PORT}
            ttl: -2
            unloadTimeout: -1
    """)
    assert found == [
        "models.llama.ttl: must be >= 0, got -2",
        "models.llama.unloadTimeout: must be >= 0, got -1",
    ]


def test_wrong_types_are_reported() -> None:
    """Strings where integers belong and lists where strings belong are errors."""
    found = problems("""
        models:
          x:
            cmd: s ${PORT}
            ttl: abc
            unlisted: "yes"
            name: [a]
            concurrencyLimit: 1.5
    """)
    assert found == [
        "models.x.ttl: expected an integer, got 'abc'",
        "models.x.concurrencyLimit: expected an integer, got 1.5",
        "models.x.unlisted: expected true or false, got 'yes'",
        "models.x.name: expected a string, got a list",
    ]


def test_quoted_number_does_not_decode_into_int() -> None:
    """A quoted number stays a string and fails an integer field."""
    line = one_problem("""
        models:
          x: {cmd: "s ${PORT}", ttl: "5"}
    """)
    assert line == "models.x.ttl: expected an integer, got '5'"


def test_model_must_be_a_mapping() -> None:
    """A model that is a list is reported."""
    assert one_problem("models:\n  x: [1]\n") == "models.x: expected a mapping, got a list"


def test_concurrency_limit_defaults_and_comfyui() -> None:
    """<=0 means 10; comfyui_auto gets at least 50 and ignores websockets."""
    config = load("""
        models:
          a: {cmd: "s ${PORT}", concurrencyLimit: -4}
          comfyui_auto: {cmd: "s ${PORT}", concurrencyLimit: 20}
    """)
    assert config.models["a"].concurrency_limit == 10
    assert config.models["comfyui_auto"].concurrency_limit == 50
    assert config.models["comfyui_auto"].ignore_websockets


def test_capabilities_are_validated() -> None:
    """Unknown modalities and negative context are errors."""
    found = problems("""
        models:
          m:
            cmd: s ${PORT}
            capabilities: {in: [text, smell], out: [video], context: -1}
    """)
    assert found == [
        'models.m.capabilities.in: invalid modality "smell", must be one of: text, audio, image',
        'models.m.capabilities.out: invalid modality "video", must be one of: text, audio, image',
        "models.m.capabilities.context: must be >= 0, got -1",
    ]


def test_invalid_proxy_url() -> None:
    """A proxy that is not an http(s) URL is rejected."""
    line = one_problem("""
        models:
          m: {cmd: s, proxy: "ftp://x:21"}
    """)
    assert line == "models.m.proxy: invalid proxy URL 'ftp://x:21': scheme must be http or https"


def test_aliases_are_global_and_unique() -> None:
    """Aliases map to their model; an alias used twice is an error."""
    config = load("""
        models:
          a: {cmd: "s ${PORT}", aliases: [gpt-4, fast]}
          b: {cmd: "s ${PORT}", aliases: [slow]}
    """)
    assert dict(config.aliases) == {"gpt-4": "a", "fast": "a", "slow": "b"}
    assert config.resolve("fast") == "a" and config.resolve("b") == "b"
    assert config.resolve("nope") is None
    line = one_problem("""
        models:
          a: {cmd: "s ${PORT}", aliases: [dup]}
          b: {cmd: "s ${PORT}", aliases: [dup]}
    """)
    assert line == "models.b.aliases: duplicate alias 'dup' (already used by model a)"


def test_filters_strip_and_set_params() -> None:
    """stripParams is split, trimmed, deduplicated, sorted and never strips model."""
    config = load("""
        models:
          m:
            cmd: s ${PORT}
            filters:
              stripParams: "top_p, temperature,, model, top_p "
              setParams: {temperature: 0.7, model: nope, nested: {a: [1, 2]}}
          legacy:
            cmd: s ${PORT}
            filters: {strip_params: "b,a"}
    """)
    f = config.models["m"].filters
    assert f.strip_params == ("temperature", "top_p")
    assert dict(f.set_params) == {"temperature": 0.7, "nested": {"a": [1, 2]}}
    assert config.models["legacy"].filters.strip_params == ("a", "b")
    assert not f.is_empty()


def test_set_params_by_id_adds_aliases() -> None:
    """setParamsByID keys expand macros and become aliases (except the model id)."""
    config = load("""
        models:
          gpt:
            cmd: s ${PORT}
            filters:
              setParamsByID:
                "${MODEL_ID}": {effort: medium}
                "${MODEL_ID}:high": {effort: high, model: ignored}
    """)
    m = config.models["gpt"]
    assert m.aliases == ("gpt:high",) and config.aliases["gpt:high"] == "gpt"
    assert dict(m.filters.set_params_by_id["gpt:high"]) == {"effort": "high"}


def test_set_params_by_id_conflicts() -> None:
    """Keys colliding with model ids, other aliases, or each other are errors."""
    found = problems("""
        models:
          a:
            cmd: s ${PORT}
            aliases: [taken]
          b:
            cmd: s ${PORT}
            filters:
              setParamsByID:
                a: {x: 1}
                taken: {x: 2}
                "${MODEL_ID}-v": {x: 3}
                "b-v": {x: 4}
                "${NOPE}": {x: 5}
    """)
    assert found == [
        'models.b.filters.setParamsByID: keys "${MODEL_ID}-v" and "b-v" resolve to the same '
        "value",
        "models.b.filters.setParamsByID: unknown macro '${NOPE}' in key '${NOPE}'",
        "models.b.filters.setParamsByID: key 'a' conflicts with an existing model ID",
        "models.b.filters.setParamsByID: duplicate alias 'taken', already used by model a",
    ]
