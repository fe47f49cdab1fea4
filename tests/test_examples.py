"""examples/: each runs as documented, against the scripted LLM."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
from conftest import MILVUS_DOCS, REPO, needs_shared, write_docs
from llm_server import Reply, ScriptedLLMServer

pytestmark = pytest.mark.timeout(180)

REASONING = "Passage [1] answers it: inserted data goes to object storage, metadata to etcd."
ANSWER = "Milvus keeps inserted data as incremental logs in object storage, metadata in etcd [1]."
FAQ = {
    "product_faq.md": """# Product FAQ

#### Where does Milvus store data?

Inserted data, including vector data, scalar data, and collection-specific schema, are stored in
persistent storage as incremental log. Metadata are stored in etcd.

#### How much does Milvus cost?

Milvus is a 100% free open-source project.
""",
    "operational_faq.md": """# Operational FAQ

#### Why does Milvus not start?

Check that the host CPU supports AVX.
""",
}


def load_example() -> ModuleType:
    path = REPO / "examples" / "milvus_faq_tutorial.py"
    spec = importlib.util.spec_from_file_location("milvus_faq_tutorial", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tutorial(faq: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> str:
    with ScriptedLLMServer(Reply(content=ANSWER, reasoning=REASONING)) as llm:
        load_example().main([str(faq), "--db", str(db), "--base-url", llm.base_url,
                             "--model", "gpt-oss-20b"])  # fmt: skip
        sent = llm.bodies()[-1]
    assert sent["reasoning_effort"] == "low"
    assert "How is data stored in milvus?" in sent["messages"][-1]["content"]
    return capsys.readouterr().out


def test_milvus_faq_tutorial_on_a_small_faq(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    faq = write_docs(tmp_path / "faq", FAQ)
    out = run_tutorial(faq, tmp_path / "faq.db", capsys)
    assert out == (
        f"ingested 2 files: 3 chunks into {tmp_path / 'faq.db'}\n"
        "question: How is data stored in milvus?\n"
        "[1] product_faq.md › Product FAQ › Where does Milvus store data? (lines 3-6)\n"
        "[2] operational_faq.md › Operational FAQ › Why does Milvus not start? (lines 3-5)\n"
        "[3] product_faq.md › Product FAQ › How much does Milvus cost? (lines 8-10)\n"
        f"reasoning: {REASONING}\n"
        f"answer: {ANSWER}\n"
        "cited: [1]\n"
    )


@needs_shared(MILVUS_DOCS / "faq")
def test_milvus_faq_tutorial_prints_what_its_docstring_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the default store path, as in the docstring
    out = run_tutorial(MILVUS_DOCS / "faq", Path("milvus_faq.db"), capsys)
    doc = load_example().__doc__ or ""
    block = doc.split("it printed::\n\n")[1].split("\n\n")[0]
    assert out == textwrap.dedent(block) + "\n"
