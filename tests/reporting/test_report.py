"""The HTML report of a short real run on the tiny task, opened in headless Chromium; the token-protected server."""

import json
import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from html.parser import HTMLParser

import pytest

from podisco.discovery.archive import Archive
from podisco.discovery.loop import run_discovery
from podisco.discovery.proposers.replay import ReplayProposer
from podisco.errors import PodiscoError
from podisco.reporting.report import write_report
from podisco.reporting.serve import make_server
from tests.discovery.configs import make_config

pytestmark = pytest.mark.slow

HOSTILE_NAME = "<script>document.body.dataset.pwned='name'</script>"
HOSTILE_THOUGHT = "<img src=x onerror=\"document.body.dataset.pwned='thought'\">"
HOSTILE_CODE = (
    "def sneaky(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps):\n"
    "    # </pre><script>document.body.dataset.pwned='code'</script><img src=x onerror=alert(1)>\n"
    "    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)\n"
    "    return -F.logsigmoid(3 * self.beta * logits)\n"
)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from podisco.tasks.imdb.prepare import prepare

    cache = tmp_path_factory.mktemp("imdb")
    prepare("tiny", cache, log=lambda message: None)
    root = tmp_path_factory.mktemp("runs")
    replay = root / "replay.jsonl"
    records = [
        {"name": HOSTILE_NAME, "thought": HOSTILE_THOUGHT, "code": HOSTILE_CODE},
        {"content": "no JSON here at all <b>bold</b>"},
    ]
    replay.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    config = make_config(
        preset="tiny",
        cache_dir=str(cache),
        proposer="replay",
        replay_file=str(replay),
        generations=1,
        population=2,
        workers=2,
        threads=1,
        seeds=(0,),
        reevaluate_top=0,
        allow_weak_isolation=True,
    )
    run_id = run_discovery(config, root, log=lambda message: None, proposer=ReplayProposer(replay))
    return root, run_id


class _Parsed(HTMLParser):
    """The page as an HTML parser reads it: every element with its attributes, script bodies, and the text."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.chunks: list[str] = []
        self._in = ""
        self.feed(page)
        self.close()
        self.text = "".join(self.chunks)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        self._in = tag

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        self._in = ""

    def handle_data(self, data):
        if self._in == "script":
            self.scripts.append(data)
        elif self._in != "style":
            self.chunks.append(data)


def test_report_shows_hostile_text_only_as_text(run, tmp_path):
    """No browser needed: what the LLM wrote (name, thought, code, a malformed reply) reaches the page as text
    only, so it adds no element, attribute or script to the report's own."""
    root, run_id = run
    html = write_report(root, run_id, tmp_path / "report.html").read_text()
    assert HOSTILE_NAME not in html and "&lt;script&gt;document.body.dataset.pwned=" in html
    page = _Parsed(html)
    hostile_comment = HOSTILE_CODE.splitlines()[1].strip()
    for shown in (HOSTILE_NAME, HOSTILE_THOUGHT, hostile_comment, "no JSON here at all <b>bold</b>"):
        assert shown in page.text  # shown, character for character, as text
    (script,) = page.scripts  # the report's one nonce'd script, nothing injected
    assert "pwned" not in script and "alert" not in script
    assert [tag for tag, _ in page.elements].count("script") == 1
    for tag, attrs in page.elements:
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)  # no inline event handler
        assert not any("pwned" in (value or "") or "alert(" in (value or "") for value in attrs.values()), (tag, attrs)
        if tag == "img":  # only the report's own figures, inline PNGs
            assert attrs.get("class") == "chart" and (attrs.get("src") or "").startswith("data:image/png;base64,")
    attempts = Archive(root / "archive.sqlite").attempts(run_id)
    rows = [attrs for tag, attrs in page.elements if tag == "tr" and attrs.get("class") == "attempt"]
    assert len(rows) == len(attempts)  # one row per attempt: no row opened or closed by a hostile string


def test_report_renders_in_chromium_and_shows_hostile_text_as_text(run, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    root, run_id = run
    page = write_report(root, run_id, tmp_path / "report.html")
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, *profile, "--enable-logging=stderr", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "pwned" not in dom.stdout.split("<body")[1].split(">")[0]  # no injected script or handler ran
    assert dom.stdout.count('class="chart"') >= 3  # fitness, loss curves, training curves
    attempts = Archive(root / "archive.sqlite").attempts(run_id)
    assert dom.stdout.count('class="attempt"') == len(attempts)
    assert '<pre id="js-errors"></pre>' in dom.stdout  # no script error was caught
    assert "Uncaught" not in dom.stderr
    shot = tmp_path / "report.png"
    subprocess.run(
        [chromium, *CHROMIUM_FLAGS, *profile, "--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 50_000  # charts drawn, not a blank page


def _get(url: str, headers: dict | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_serve_needs_the_token_and_stays_on_loopback(run):
    root, run_id = run
    with pytest.raises(PodiscoError, match="--allow-remote"):
        make_server(root, run_id, host="0.0.0.0")
    server = make_server(root, run_id, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        assert _get(f"http://127.0.0.1:{port}/")[0] == 403
        assert _get(f"http://127.0.0.1:{port}/?token=wrong")[0] == 403
        status, body = _get(server.url)
        assert status == 200 and "podisco discovery run" in body
        assert _get(f"http://127.0.0.1:{port}/", {"Authorization": f"Bearer {server.token}"})[0] == 200
        outside = _non_loopback_address()
        if outside:
            with pytest.raises(OSError):
                socket.create_connection((outside, port), timeout=3)
    finally:
        server.shutdown()
        server.server_close()


def _non_loopback_address() -> str | None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        address = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


def test_sweep_figures_for_an_imdb_and_a_judged_sweep(tmp_path):
    from podisco.reporting.report import _frontier

    imdb = tmp_path / "imdb.csv"
    imdb.write_text(
        "loss,beta,seed,reward,kl,kl_penalised\nsigmoid,0.05,0,0.44,0.27,0.41\nsigmoid,0.1,0,0.42,0.2,0.4\n"
    )
    judged = tmp_path / "chat.csv"
    judged.write_text("loss,beta,seed,score,stderr,judged\nsigmoid,0.05,0,6.5,0.3,160\ndiscopop,0.05,0,6.9,0.3,160\n")
    html = _frontier([imdb, judged])
    assert html.count('<img class="chart"') == 2 and html.count("data:image/png;base64,") == 2
    assert 'alt="sweep of chat.csv"' in html
