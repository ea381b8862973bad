"""The status page's pure parts: the trend history on disk, language choice, the SVG plot,
escaping, and the [web] config rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.config.errors import ConfigError
from agent.config.schema import RawWeb
from agent.config.web import web_spec
from agent.core.model import Frame, Quality
from agent.service.web.i18n import negotiate
from agent.service.web.pages import esc
from agent.service.web.svg import trend_svg
from agent.store.history import History

T0 = 1_800_000_000.0  # a bucket boundary for every step used here


def frame(ts: float, values: list[float], quality: int = 0) -> Frame:
    n = len(values)
    return Frame(
        index=np.arange(n, dtype=np.intp),
        ts=np.full(n, ts),
        value=np.asarray(values, dtype=np.float64),
        quality=np.full(n, quality, dtype=np.uint8),
        bus="b",
    )


def test_history_keeps_min_max_last_per_bucket_and_survives_a_restart(tmp_path: Path) -> None:
    h = History(tmp_path, ["A", "B"], hours=1, step=60)
    for i, v in enumerate([5.0, 9.0, 7.0]):
        h.observe(frame(T0 + i, [v, 1.0]))
    h.observe(frame(T0 + 60, [3.0, 2.0]))
    h.observe(frame(T0 + 61, [np.nan, 2.0], int(Quality.COMM_FAIL)))  # bad: not in the curve
    h.close()
    again = History(tmp_path, ["A", "B"], hours=1, step=60)
    s = again.series(0, 3600, T0 + 100)
    assert s.start.tolist() == [T0, T0 + 60]
    assert s.low.tolist() == [5.0, 3.0] and s.high.tolist() == [9.0, 3.0]
    assert s.last.tolist() == [7.0, 3.0]


def test_history_is_bounded_and_restarts_fresh_when_the_points_change(tmp_path: Path) -> None:
    h = History(tmp_path, ["A"], hours=1, step=600)  # 6 buckets
    for i in range(20):
        h.observe(frame(T0 + i * 600, [float(i)]))
    assert len(h.series(0, 10 * 3600, T0 + 20 * 600)) == 6
    h.close()
    other = History(tmp_path, ["A", "C"], hours=1, step=600)
    assert len(other.series(0, 10 * 3600, T0 + 20 * 600)) == 0


def test_accept_language() -> None:
    assert negotiate("zh-CN,zh;q=0.9,en;q=0.8") == "zh"
    assert negotiate("en-US,en;q=0.9,zh-CN;q=0.8") == "en"
    assert negotiate("de-DE,zh;q=0.5") == "zh"
    assert negotiate("fr, de") == "en" and negotiate("") == "en"


def test_svg_plot_rises_with_the_values(tmp_path: Path) -> None:
    h = History(tmp_path, ["A"], hours=1, step=60)
    for i in range(10):
        h.observe(frame(T0 + i * 60, [20.0 + 5 * i]))
    svg = trend_svg(h.series(0, 3600, T0 + 600), 3600, T0 + 600, "°C", esc("<b>x</b>"))
    assert 'data-first="20.000"' in svg and 'data-last="65.000"' in svg
    assert "<b>" not in svg and "&lt;b&gt;" in svg


def test_a_lan_bind_needs_a_token_file(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    assert web_spec(RawWeb(enabled=True), [], cfg).bind == "127.0.0.1"
    with pytest.raises(ConfigError, match="token_file"):
        web_spec(RawWeb(enabled=True, bind="0.0.0.0"), [], cfg)
    token = tmp_path / "token"
    token.write_text("x" * 20)
    token.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        web_spec(RawWeb(enabled=True, bind="0.0.0.0", token_file="token"), [], cfg)
    token.chmod(0o600)
    spec = web_spec(RawWeb(enabled=True, bind="0.0.0.0", token_file="token"), [], cfg)
    assert spec.token == "x" * 20 and "x" * 20 not in repr(spec)


def test_the_demo_moves_the_page_off_a_taken_port() -> None:
    import socket

    from firmware_sim.demo import status_page_url

    assert status_page_url({"web": {"enabled": False}}) is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg: dict[str, object] = {"web": {"enabled": True, "bind": "127.0.0.1", "port": port}}
        url = status_page_url(cfg)
    assert url is not None and url.startswith("http://127.0.0.1:")
    assert url != f"http://127.0.0.1:{port}/" and url.endswith(f":{cfg['web']['port']}/")  # type: ignore[index]


def test_loopback_host_header() -> None:
    from agent.service.web.server import _loopback_host

    for ok in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080", "127.0.0.1", "localhost"):
        assert _loopback_host(ok), ok
    for bad in ("attacker.example", "attacker.example:8080", "10.0.0.5:8080", "[fe80::1]:80"):
        assert not _loopback_host(bad), bad
