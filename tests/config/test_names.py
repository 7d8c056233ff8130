"""Peers, profiles and selectors: parsing and the shared name space."""

from __future__ import annotations

from .support import load, one_problem, problems

BASE = """
models:
  a: {cmd: "s ${PORT}", aliases: [al]}
  b: {cmd: "s ${PORT}"}
  c: {cmd: "s ${PORT}"}
peers:
  remote:
    proxy: https://example.com/api
    apiKey: k
    models: [m1, org/m2, m1]
    filters: {stripParams: "x", setParams: {y: 1}}
    timeouts: {connect: 5}
  other:
    proxy: http://10.0.0.2:8080
    models: [m1]
"""


def test_peers_are_parsed() -> None:
    """Peer models are de-duplicated; the response-header timeout defaults to 60."""
    peer = load(BASE).peers["remote"]
    assert peer.models == ("m1", "org/m2") and peer.api_key == "k"
    assert peer.filters.strip_params == ("x",) and dict(peer.filters.set_params) == {"y": 1}
    assert peer.timeouts.connect == 5 and peer.timeouts.response_header == 60


def test_peer_errors() -> None:
    """Missing proxy, bad URL and empty models are reported per peer."""
    found = problems("""
        peers:
          p1: {models: [x]}
          p2: {proxy: "not a url", models: [x]}
          p3: {proxy: "http://h"}
    """)
    assert found == [
        "peers.p1.proxy: proxy is required",
        "peers.p2.proxy: invalid peer proxy URL (not a url): scheme must be http or https",
        "peers.p3.models: peer models can not be empty",
    ]


def test_peer_namespace_conflicts() -> None:
    """FQNs must be unambiguous and must not equal model ids or aliases."""
    found = problems("""
        models:
          p/x: {cmd: "s ${PORT}"}
          y: {cmd: "s ${PORT}", aliases: [q/z]}
        peers:
          p: {proxy: "http://h", models: [x]}
          q: {proxy: "http://h", models: [z, a/b]}
          q/a: {proxy: "http://h", models: [b]}
    """)
    assert found == [
        'models.p/x: model ID "p/x" conflicts with fully qualified peer model name',
        'models.y.aliases: alias "q/z" conflicts with fully qualified peer model name',
        'peers.q/a.models: peer model name "q/a/b" is ambiguous between peers.q model "a/b" '
        'and peers.q/a model "b"',
    ]


def test_profiles() -> None:
    """Pins map names to models, aliases, peer models or selectors; null disables."""
    config = load(BASE + """
selectors:
  pick: {strategy: pin, targets: [a]}
profiles:
  work:
    description: Work
    pins: {llm: al, remote-one: remote/m1, sel: pick, off: ~, gone: ""}
""")
    profile = config.profiles["work"]
    assert profile.description == "Work"
    assert dict(profile.pins) == {"llm": "al", "remote-one": "remote/m1", "sel": "pick",
                                  "off": "", "gone": ""}


def test_profile_errors() -> None:
    """Legacy list form, empty pins, unknown targets and FQN pins are rejected."""
    found = problems(BASE + """
profiles:
  old: [a, b]
  empty: {pins: {}}
  bad:
    pins: {x: nowhere, y: m1, remote/m1: a}
""")
    assert found == [
        "profiles.old: profile must be a mapping with description and pins; the legacy list "
        "syntax is no longer supported",
        "profiles.empty.pins: must contain at least one entry",
        'profiles.bad.pins.x: references unknown model "nowhere"',
        'profiles.bad.pins.y: references unknown model "m1"',
        'profiles.bad.pins.remote/m1: profile bad pin "remote/m1" conflicts with fully '
        "qualified peer model name",
    ]


def test_selectors_parse() -> None:
    """A selector keeps strategy, targets, spillover, display fields and metadata."""
    config = load(BASE + """
groups:
  duo: {swap: false, members: [a, b]}
routing: {scheduler: {use: fifo}}
selectors:
  coder:
    strategy: spillover
    targets: [al, b, remote/m1]
    settings: {spillover: 4}
    name: Coder
    unlisted: true
    metadata: {k: 1}
""")
    sel = config.selectors["coder"]
    assert sel.strategy == "spillover" and sel.targets == ("al", "b", "remote/m1")
    assert sel.spillover == 4 and sel.name == "Coder" and sel.unlisted
    assert dict(sel.metadata) == {"k": 1}


def test_selector_errors() -> None:
    """Every selector rule of SPEC 2.11 has its message."""
    assert problems(BASE + """
selectors:
  a: {strategy: pin, targets: [b]}
  al: {strategy: pin, targets: [b]}
""") == ['selectors.a: name conflicts with model ID "a"',
         'selectors.al: name conflicts with model alias "al"']
    found = problems(BASE + """
selectors:
  s1: {targets: [b]}
  s2: {strategy: random, targets: [b]}
  s3: {strategy: pin}
  s4: {strategy: pin, targets: [s1, ghost]}
  s5: {strategy: warm, targets: [remote/m1]}
  s6: {strategy: spillover, targets: [a, al], settings: {spillover: 0}}
  s7: {strategy: spillover, targets: [a, b]}
""")
    assert found == [
        "selectors.s1.strategy: is required",
        'selectors.s2.strategy: unknown strategy "random" (valid: warm, pin, spillover)',
        "selectors.s3.targets: must contain at least one entry",
        'selectors.s4.targets[0]: references selector "s1"; selector chaining is not supported',
        'selectors.s4.targets[1]: references unknown model "ghost"',
        'selectors.s5.targets[0]: must resolve to a local model for strategy "warm"',
        "selectors.s6.settings.spillover: must be >= 1",
        'selectors.s6.targets: contains duplicate resolved model "a"',
        "selectors.s7: spillover targets must share a group with swap: false",
    ]


def test_spillover_group_rules() -> None:
    """Spillover local targets must share one swap:false group."""
    found = problems(BASE + """
groups:
  g1: {swap: false, members: [a]}
  g2: {swap: false, members: [b]}
selectors:
  s: {strategy: spillover, targets: [a, b]}
""")
    assert "selectors.s: spillover targets must share one routing group" in found


def test_spillover_matrix_rule() -> None:
    """With the matrix router spillover targets must share one expanded set."""
    text = BASE + """
matrix:
  sets: {s1: "a & b", s2: "c"}
routing: {scheduler: {use: fifo}}
selectors:
  ok: {strategy: spillover, targets: [a, b, remote/m1]}
  %s
"""
    assert "ok" in load(text % "").selectors
    line = one_problem(text % "bad: {strategy: spillover, targets: [a, c]}")
    assert line == "selectors.bad.targets: must all appear together in one expanded matrix set"


def test_bare_peer_name_must_be_unique() -> None:
    """A bare peer model name resolves only when one peer lists it."""
    config = load(BASE + "selectors:\n  s: {strategy: pin, targets: [org/m2]}\n")
    assert config.selectors["s"].targets == ("org/m2",)
    line = one_problem(BASE + "selectors:\n  s: {strategy: pin, targets: [m1]}\n")
    assert line == 'selectors.s.targets[0]: references unknown model "m1"'
