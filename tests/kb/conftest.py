"""Fixtures for the knowledge-base tests: small documents in every supported format."""

from pathlib import Path

import pytest
from kb_builders import make_pdf


@pytest.fixture()
def docs(tmp_path) -> Path:
    """A folder with one document per format, each about a different made-up product topic."""
    root = tmp_path / "docs"
    (root / "guides").mkdir(parents=True)
    (root / "guides" / "billing.md").write_text(
        "# Billing\n\nInvoices are sent on the first day of each month.\n\n"
        "## Refunds\n\nRefunds are paid back to the original card within 14 days of the request.\n\n"
        "## Currencies\n\nWe bill in euros, dollars and pounds.\n", encoding="utf-8")
    (root / "setup.txt").write_text(
        "Installing the Widget\n=====================\n\n"
        "Plug the widget into a USB port and hold the blue button for five seconds to pair it.\n\n"
        "Resetting\n---------\n\nTo factory-reset the widget, press the red pinhole switch with a paperclip.\n",
        encoding="utf-8")
    (root / "account.html").write_text(
        "<html><head><title>Account</title><style>body{color:red}</style><script>var tracking=1;</script></head>"
        "<body><nav><a href='/'>Home</a> | <a href='/pricing'>Pricing</a> | Sign in</nav>"
        "<main><h1>Account</h1><h2>Passwords</h2><p>To change your password, open Settings and choose "
        "Security, then Change password.</p><!-- internal: migrate auth to v2 -->"
        "<p style='display:none'>hidden promo text</p></main>"
        "<footer>Copyright Example Corp. All rights reserved.</footer></body></html>", encoding="utf-8")
    (root / "warranty.pdf").write_bytes(make_pdf(["The warranty lasts two years from purchase.",
                                                  "Warranty claims need the original receipt."]))
    return root


@pytest.fixture()
def support_kb(slm_home, docs):
    """The documents above ingested as the knowledge base ``support``."""
    from slmkit.kb.index import ingest

    ingest("support", [docs])
    return "support"
