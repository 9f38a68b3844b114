"""The documentation site: builds with --strict, its CLI page comes from the parser, and it opens
in headless Chromium with no request leaving the machine."""
import argparse
import http.server
import os
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("HYPERSEG_TEST_ARTIFACTS", REPO / "test-artifacts"))
pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
pytest.importorskip("mkdocstrings", reason="the docs extra is not installed: pip install -e '.[docs]'")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
                           "-d", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_the_cli_page_lists_every_subcommand_and_option(site):
    from hyperseg.cli import build_parser

    page = (site / "cli" / "index.html").read_text()
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert len(subparsers.choices) >= 8
    for name, sub in subparsers.choices.items():
        assert f'id="{name}"' in page, name
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue  # -h/--help is on every usage line; hidden options stay hidden
            for option in action.option_strings:
                assert f"<code>{option}</code>" in page, f"{name} {option}"


def test_the_api_page_documents_the_public_entry_points(site):
    page = (site / "api" / "index.html").read_text()
    for name in ("create_model", "load_model", "Predictor", "load_runtime", "evaluate"):
        assert name in page, name


def _system_chromium():
    from conftest import system_chromium

    return system_chromium()


def test_the_built_site_opens_offline_in_chromium(site):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    browser_path = _system_chromium()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    outside = []
    try:
        with playwright_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(
                (f"http://127.0.0.1:{port}/", "data:", "blob:")) else None)
            for path in ("", "getting-started/", "deployment/", "results/", "cli/", "api/", "authors-code/"):
                page.goto(f"http://127.0.0.1:{port}/{path}")
                page.wait_for_load_state("networkidle")
                assert page.title()
            page.goto(f"http://127.0.0.1:{port}/")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)  # for a person to look at (not in git)
            page.screenshot(path=str(ARTIFACTS / "docs_site.png"))
            browser.close()
    finally:
        server.shutdown()
    assert outside == []


def _hook(checkout):
    """The CLI-page hook of ``checkout``, imported from its own scripts folder."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"cli_hook_{abs(hash(str(checkout)))}",
                                                  checkout / "scripts" / "mkdocs_cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_page_comes_from_the_checkout_being_built(tmp_path):
    """Another checkout whose command line says something else: its page says that, not what the installed
    hyperseg (this checkout) says."""
    import shutil

    from mkdocs.config import load_config
    from mkdocs.structure.files import Files

    checkout = tmp_path / "other"
    checkout.mkdir()
    shutil.copy(REPO / "mkdocs.yml", checkout)
    shutil.copytree(REPO / "docs", checkout / "docs")
    shutil.copytree(REPO / "scripts", checkout / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "src", checkout / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pt", "*.egg-info"))
    cli = checkout / "src" / "hyperseg" / "cli" / "export.py"
    original = 'help="the .onnx file to write"'
    assert original in cli.read_text()
    cli.write_text(cli.read_text().replace(original, 'help="the ONNX file, as only the other checkout says"'))

    config = load_config(str(checkout / "mkdocs.yml"))  # loads the hooks beside it, as `mkdocs build` does
    files = config.plugins.on_files(Files([]), config=config)
    page = next(f for f in files if f.src_uri == "cli.md").content_string
    assert "the ONNX file, as only the other checkout says" in page
    assert "the .onnx file to write" not in page
    assert "## export" in page and "`--out`" in page


def test_the_cli_page_refuses_a_checkout_without_its_source_tree(tmp_path):
    from types import SimpleNamespace

    from mkdocs.exceptions import PluginError

    (tmp_path / "mkdocs.yml").write_text("site_name: x\n")
    with pytest.raises(PluginError, match=r"src/hyperseg/cli/__init__\.py not found"):
        _hook(REPO).on_files([], SimpleNamespace(config_file_path=str(tmp_path / "mkdocs.yml")))
