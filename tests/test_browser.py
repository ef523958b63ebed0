"""The reports in a real browser: headless Chromium loads an index and one report of each suite
from disk, as a reviewer opens them.

Checked on each page: no request leaves it, no console error, every chart is a non-empty SVG
with a text alternative, no horizontal scroll of the page at a phone's 390 px width, and a print
stylesheet. Screenshots go to ``test-output/browser/`` (wide and narrow). Skipped, with the
reason, where Chromium and its driver (Debian's ``chromium``, ``chromium-driver``; ``make test``
installs them when it can) or the ``selenium`` package are missing.
"""

import json
import shutil
from pathlib import Path

import pytest

from redteam.commands.evaluate_protection import ProtectionEvaluationRequest, evaluate_protection
from redteam.demo import IndexTable
from redteam.engine import AuditRequest, run_audit
from reports.html import write_index

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-output" / "browser"
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="needs Debian's chromium and chromium-driver")


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def pages(unlearning_zoo, backdoor_zoo, protection_zoo, visu_zoo, concept_zoo, tmp_path_factory):
    """A small demo folder: one real run of each suite and the index linking them."""
    out = tmp_path_factory.mktemp("browser") / "demo"
    runs = {
        "unlearning": AuditRequest(
            model=unlearning_zoo["npo"], suite="unlearning", data=unlearning_zoo["audit"],
            reference=unlearning_zoo["original"], retrain=unlearning_zoo["retrain"],
            probes=["unlearning.knowledge_qa", "unlearning.membership_inference"]),
        "backdoor": AuditRequest(model=backdoor_zoo["badnets"], suite="backdoor",
                                 data=backdoor_zoo["clean-data"], probes=["backdoor.exposure"]),
        "adversarial": AuditRequest(model=backdoor_zoo["clean"], suite="adversarial",
                                    data=backdoor_zoo["test-data"],
                                    probes=["adversarial.fgsm"]),
        "safety": AuditRequest(model=visu_zoo["hysac"], suite="safety", data=visu_zoo["test"],
                               reference=visu_zoo["clip"]),
        "concept": AuditRequest(model=concept_zoo["erased"], suite="concept",
                                data=concept_zoo["prompts"], reference=concept_zoo["original"],
                                judge=str(concept_zoo["judge"]), concept_label="3",
                                settings={"concept.unlearndiffatk": QUICK_ATTACK,
                                          "concept.random_prefix": {"inference_steps": 10},
                                          "concept.seed_search": {"inference_steps": 10}}),
    }
    index = IndexTable(out)
    for name, request in runs.items():
        request.out, request.quiet, request.device = out / name, True, "cpu"
        index.add(name, f"a {name} audit", run_audit(request))
    copy = out.parent / "unprotected"
    shutil.copytree(protection_zoo["publish"], copy)
    index.add("protection", "an unprotected copy", evaluate_protection(
        ProtectionEvaluationRequest(clean_dir=protection_zoo["publish"], protected_dir=copy,
                                    test_dir=protection_zoo["test"], out=out / "protection",
                                    epochs=2, quiet=True)))
    table = index.table("Runs", "one of each suite")
    write_index(out / "index.html", table["rows"], table["columns"], table["cells"])
    return {"index": out / "index.html", **{name: out / name / "report.html"
                                            for name in [*runs, "protection"]}}


QUICK_ATTACK = {"k": 2, "timesteps": 4, "iterations": 4, "timestep_batch": 2,
                "inference_steps": 10}

PAGE_FACTS = """
const svgs = [...document.querySelectorAll('svg')];
const sheets = [...document.styleSheets].flatMap(s => [...s.cssRules]);
return {
  charts: svgs.map(s => ({
    shapes: s.querySelectorAll('rect, path, line, circle, polyline, polygon').length,
    width: s.getBoundingClientRect().width, height: s.getBoundingClientRect().height,
    alt: (s.getAttribute('aria-label') || (s.querySelector('title') || {}).textContent || '')
         .trim()})),
  scroll: document.documentElement.scrollWidth, viewport: window.innerWidth,
  print: sheets.some(r => r.media && [...r.media].includes('print')),
};
"""


def _open(driver, path: Path, name: str) -> dict:
    driver.get_log("performance")  # drop what earlier pages left
    driver.get_log("browser")
    driver.set_window_size(1280, 900)
    driver.get(path.as_uri())
    driver.save_screenshot(str(SCREENSHOTS / f"{name}-wide.png"))
    requests = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    urls = [m["params"]["request"]["url"] for m in requests
            if m.get("method") == "Network.requestWillBeSent"]
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    driver.set_window_size(390, 844)
    facts = driver.execute_script(PAGE_FACTS)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}-390px.png"))
    return {"urls": urls, "errors": errors, **facts}


@pytest.mark.parametrize("name", ["index", "unlearning", "backdoor", "adversarial", "protection",
                                  "safety", "concept"])
def test_page_in_a_headless_browser(browser, pages, name):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    facts = _open(browser, pages[name], name)
    leaving = [u for u in facts["urls"] if not u.startswith(("file:", "data:"))]
    assert not leaving, f"requests left the page: {leaving}"
    assert not facts["errors"], facts["errors"]
    if name != "index":
        assert facts["charts"], "a report of a run with charts drew none"
    for chart in facts["charts"]:
        assert chart["shapes"] > 0 and chart["width"] > 0 and chart["height"] > 0, chart
        assert chart["alt"], "a chart without a text alternative"
    assert facts["scroll"] <= facts["viewport"], \
        f"the page scrolls sideways at 390 px ({facts['scroll']} > {facts['viewport']})"
    assert facts["print"], "no print stylesheet"
    assert (SCREENSHOTS / f"{name}-390px.png").stat().st_size > 1000
