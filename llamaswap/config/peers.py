"""``peers`` (SPEC 2.9) and the shared name lookup used by profiles and selectors."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from llamaswap.config.fields import Section
from llamaswap.config.filters import read_filters
from llamaswap.config.gofmt import format_value
from llamaswap.config.model import ModelConfig, PeerConfig, Timeouts
from llamaswap.config.models import check_url, read_timeouts

PEER_TIMEOUTS = Timeouts(response_header=60)


def read_peers(top: Section) -> dict[str, PeerConfig]:
    """Every peer: proxy URL, non-empty model list, api key, filters and timeouts."""
    section = top.section("peers")
    peers: dict[str, PeerConfig] = {}
    for key in section.raw:
        peer_id = format_value(key)
        p = section.section(key)
        proxy = p.get_str("proxy").strip()
        if not proxy:
            p.bad("proxy", "proxy is required")
        else:
            reason = check_url(proxy)
            if reason:
                p.bad("proxy", f"invalid peer proxy URL ({proxy}): {reason}")
        models: list[str] = []
        for model in p.get_str_list("models"):
            if model.strip() and model not in models:
                models.append(model)
        if not models:
            p.bad("models", "peer models can not be empty")
        peers[peer_id] = PeerConfig(
            id=peer_id,
            proxy=proxy,
            models=tuple(models),
            api_key=p.get_str("apiKey"),
            filters=read_filters(p.section("filters")),
            timeouts=read_timeouts(p.section("timeouts"), PEER_TIMEOUTS),
        )
    return peers


@attrs.frozen
class Names:
    """Everything a requested name can resolve to: local models, aliases, peers, selectors."""

    models: Mapping[str, ModelConfig]
    aliases: Mapping[str, str]
    peers: Mapping[str, PeerConfig]
    selectors: frozenset[str] = frozenset()

    def fqns(self) -> dict[str, tuple[str, str]]:
        """Fully qualified peer model name -> (peer id, model)."""
        out: dict[str, tuple[str, str]] = {}
        for peer_id, peer in self.peers.items():
            for model in peer.models:
                out.setdefault(f"{peer_id}/{model}", (peer_id, model))
        return out

    def local(self, name: str) -> str | None:
        """The local model id for a model id or alias."""
        if name in self.models:
            return name
        return self.aliases.get(name)

    def peer(self, name: str) -> str | None:
        """The FQN for a peer model name (FQN, or a bare name exactly one peer lists)."""
        fqns = self.fqns()
        if name in fqns:
            return name
        owners = [f"{p}/{name}" for p, peer in self.peers.items() if name in peer.models]
        return owners[0] if len(owners) == 1 else None

    def resolve(self, name: str) -> str | None:
        """A local model id or a peer FQN (local names win), or None."""
        return self.local(name) or self.peer(name)


def check_namespace(names: Names, top: Section) -> None:
    """Peer FQNs must be unambiguous and must not shadow model ids or aliases."""
    seen: dict[str, tuple[str, str]] = {}
    for peer_id, peer in names.peers.items():
        for model in peer.models:
            fqn = f"{peer_id}/{model}"
            if fqn in seen and seen[fqn][0] != peer_id:
                other_peer, other_model = seen[fqn]
                top.problems.add(
                    f"peers.{peer_id}.models",
                    f'peer model name "{fqn}" is ambiguous between peers.{other_peer} model '
                    f'"{other_model}" and peers.{peer_id} model "{model}"',
                )
            seen.setdefault(fqn, (peer_id, model))
            if fqn in names.models:
                top.problems.add(f"models.{fqn}",
                                 f'model ID "{fqn}" conflicts with fully qualified peer model name')
            owner = names.aliases.get(fqn)
            if owner is not None:
                top.problems.add(f"models.{owner}.aliases",
                                 f'alias "{fqn}" conflicts with fully qualified peer model name')
