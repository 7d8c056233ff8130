"""The shipped example configs load cleanly."""

from __future__ import annotations

from pathlib import Path

from llamaswap.config import load_config

from .support import ROUTERS, SCHEDULERS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_demo_config_loads() -> None:
    """examples/demo.yaml loads without warnings and uses the test responder."""
    config = load_config(str(EXAMPLES / "demo.yaml"), environ={},
                         installed_routers=ROUTERS, installed_schedulers=SCHEDULERS)
    assert config.warnings == ()
    assert sorted(config.models) == ["chat-a", "chat-b", "coder", "embedder"]
    for model_id, model in config.models.items():
        assert model.cmd == (
            f"python -m llamaswap.testing.responder --port {model.port} --model {model_id}")
        assert model.proxy == f"http://localhost:{model.port}"
    assert config.resolve("gpt-4o-mini") == "chat-a"
    assert config.resolve("coder:precise") == "coder"
    assert config.models["chat-a"].ttl == 300
    groups = config.routing.router.settings["groups"]
    assert groups["tools"].swap is False and groups["tools"].members == ("coder", "embedder")


def test_llama_swap_example_loads() -> None:
    """llama-swap's own config.example.yaml (minimally adapted) loads."""
    env = {"HOME": "/home/u", "API_KEY_1": "k1", "API_KEY_2": "k2",
           "OPENROUTER_API_KEY": "sk-or"}
    config = load_config(str(EXAMPLES / "llama-swap-style.yaml"), environ=env,
                         installed_routers=ROUTERS, installed_schedulers=SCHEDULERS)
    gpt = config.models["gpt-oss-120b"]
    assert gpt.health_check_timeout == 500 and gpt.ttl == 60
    assert gpt.metadata["port"] == gpt.port and gpt.metadata["temperature"] == 0.7
    assert gpt.metadata["an_obj"]["c"] == [0.7, False, "model: gpt-oss-120b"]
    assert "--ctx-size 16384" in gpt.cmd and "--temperature 0.7" in gpt.cmd
    assert config.resolve("gpt-oss-120b:high") == "gpt-oss-120b"
    assert config.models["docker-llama"].cmd_stop == "docker stop docker-llama"
    assert config.api_keys[2:] == ("k1", "k2")
    assert config.peers["openrouter"].api_key == "sk-or"
    assert config.performance.every == 15 and config.capture_buffer_mb == 15
    assert config.routing.scheduler.use == "fifo"
    assert set(config.selectors) == {"coding-model", "llm-plan", "llama"}
    assert config.profiles["coding"].pins["image-gen"] == ""


def test_llama_cpp_example_loads() -> None:
    """examples/llama-cpp.yaml (real llama-server models, a Docker model, groups) loads."""
    config = load_config(str(EXAMPLES / "llama-cpp.yaml"), environ={},
                         installed_routers=ROUTERS, installed_schedulers=SCHEDULERS)
    assert config.warnings == ()
    assert config.routing.scheduler.use == "fifo"
    assert config.models["docker-chat"].cmd_stop == "docker stop docker-chat"
    assert config.models["qwen-chat"].cmd.startswith("/usr/local/bin/llama-server --host 127.0.0.1")
    assert config.preload == ("embed",)
