"""Synthetic business documents with known answers, for training and scoring extractors.

Invoices, contracts and support tickets in several page layouts, label wordings, date and money
formats, with distractors beside each answer (a PO number beside the invoice number, subtotal and
VAT beside the total, a signing date beside the effective date, an order number beside the
ticket id). Each document knows its fields twice: as printed (what an extractor copies) and
normalized (ISO 8601 dates, numbers, ISO 4217 codes: the gold answer).

Layouts come in two groups: ``TUNE_LAYOUTS`` to train and tune on, ``HELDOUT_LAYOUTS`` (drawn
by :mod:`slmkit.docs.synthetic_heldout`, a module of their own) kept apart to report on.
Everything is drawn from a seeded ``random.Random``: the same seed writes the same documents.
"""

from __future__ import annotations

import dataclasses
import datetime
import random

TUNE_LAYOUTS = {"invoice": ["classic", "printout", "header-table", "receipt", "two-column"],
                "contract": ["agreement", "key-terms", "clauses"],
                "ticket": ["form", "helpdesk-export", "web-form", "chat"]}
HELDOUT_LAYOUTS = {"invoice": ["sidebar", "letter"], "contract": ["cover-sheet"], "ticket": ["email"]}

COMPANY_A = ["Northwind", "Bluebird", "Harbor", "Granite", "Silverline", "Maple", "Quantum", "Redwood", "Atlas",
             "Evergreen", "Sunrise", "Kestrel", "Orion", "Cobalt", "Juniper", "Lakeside", "Pioneer", "Summit"]
COMPANY_B = ["Trading", "Logistics", "Software", "Foods", "Consulting", "Print Works", "Electric", "Analytics",
             "Textiles", "Builders", "Health", "Media", "Robotics", "Supply"]
COMPANY_C = ["Ltd", "LLC", "Inc.", "GmbH", "S.A.", "BV", "plc", "Co."]
FIRST = ["Anna", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Keiko", "Liam",
         "Maria", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sven", "Tara"]
LAST = ["Novak", "Schmidt", "Okafor", "Rossi", "Tanaka", "Dubois", "Kowalski", "Silva", "Larsen", "Moreau",
        "Fischer", "Garcia", "Lindqvist", "Haddad", "O'Brien", "Petrov"]
PRODUCTS = ["CloudSync Pro", "Ledger Desktop", "PrintHub 3", "RouterMax X2", "MailGuard", "DataVault",
            "ShopCart Plus", "TimeTrack Mobile"]
SUBJECTS = ["Cannot log in after password reset", "Invoice shows wrong VAT rate", "Sync stops at 99 percent",
            "Printer not detected on network", "Refund for duplicate charge", "App crashes when exporting PDF",
            "Two-factor codes not arriving", "Slow dashboard since update"]
PRIORITIES = ["Low", "Normal", "High", "Urgent"]
LAWS = ["England and Wales", "the State of New York", "Germany", "the Netherlands", "Ontario", "France"]
ITEMS = ["Consulting hours", "Software licence", "Support plan", "Hardware kit", "Training session", "Shipping",
         "Cloud storage", "Maintenance visit", "Design work", "Data migration"]

DATE_FORMATS = ["%d %B %Y", "%B %d, %Y", "%Y-%m-%d", "%d/%m/%Y", "%d.%m.%Y", "%b %d, %Y", "%d-%b-%Y"]
# (symbol or code as printed, ISO 4217 code, where it goes, thousands separator, decimal mark)
MONEY_STYLES = [("$", "USD", "prefix", ",", "."), ("USD", "USD", "prefix ", ",", "."), ("£", "GBP", "prefix", ",", "."),
                ("EUR", "EUR", "suffix ", ".", ","), ("EUR", "EUR", "prefix ", ",", "."), ("CHF", "CHF", "prefix ", "'", "."),
                ("EUR", "EUR", "suffix ", " ", ",")]
LABELS = {
    "invoice_number": ["Invoice No.", "Invoice #", "Invoice Number", "Inv. No", "Bill No."],
    "invoice_date": ["Invoice Date", "Date", "Issued", "Date of issue"],
    "due_date": ["Due Date", "Payment due", "Due", "Pay by"],
    "po_number": ["PO Number", "Purchase Order", "PO #", "Your order ref."],
    "customer_id": ["Customer ID", "Account No.", "Client code"],
    "total_amount": ["Total", "Amount Due", "Total Due", "Grand Total", "Balance due"],
    "subtotal": ["Subtotal", "Net amount", "Sub-total"],
    "tax": ["VAT 20%", "Tax", "VAT", "Sales tax 8%"],
    "ticket_id": ["Ticket", "Case ID", "Ticket #", "Reference"],
    "opened_date": ["Opened", "Created", "Submitted on", "Date"],
}


@dataclasses.dataclass
class Synthetic:
    kind: str
    layout: str
    fields: dict  # the gold answer: normalized values, None where the document does not say
    printed: dict  # each field as printed in the document (what an extractor copies), None if absent
    lines: list  # (x_mm, y_mm, text, font, size) to draw, or (x, y, "RECT", w, h)
    subject: str = ""  # what it is about, to score summaries: items billed, contract title, ticket subject

    @property
    def parties(self) -> list[str]:
        """The names a summary should give: vendor and customer, provider and client, or the requester."""
        return [self.fields[name] for name in PARTY_FIELDS[self.kind]]


def company(rng: random.Random) -> str:
    return f"{rng.choice(COMPANY_A)} {rng.choice(COMPANY_B)} {rng.choice(COMPANY_C)}"


def person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def some_date(rng: random.Random, start: datetime.date | None = None, within_days: int = 700) -> datetime.date:
    start = start or datetime.date(2024, 1, 1)
    return start + datetime.timedelta(days=rng.randrange(within_days))


def print_date(rng: random.Random, day: datetime.date, formats=DATE_FORMATS) -> str:
    fmt = rng.choice(formats)
    if fmt.startswith("%d/") and day.day <= 12:  # keep day/month unambiguous
        fmt = "%d %B %Y"
    return day.strftime(fmt)


def print_money(amount: float, style) -> str:
    mark, _, place, thousands, decimal = style
    whole, cents = f"{amount:.2f}".split(".")
    groups = []
    while len(whole) > 3:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    number = thousands.join([whole, *groups]) + decimal + cents
    if place.startswith("prefix"):
        return mark + (" " if place.endswith(" ") else "") + number
    return number + " " + mark


def invoice(rng: random.Random, layout: str) -> Synthetic:
    style = rng.choice(MONEY_STYLES)
    issued = some_date(rng)
    due = issued + datetime.timedelta(days=rng.choice([14, 15, 30, 45, 60]))
    items = [(rng.choice(ITEMS), rng.randint(1, 9), round(rng.uniform(8, 900), 2)) for _ in range(rng.randint(1, 4))]
    subtotal = round(sum(q * p for _, q, p in items), 2)
    tax = round(subtotal * rng.choice([0.2, 0.19, 0.08, 0.0]), 2)
    total = round(subtotal + tax, 2)
    number = rng.choice(["INV-{}", "{}", "A{}", "2025-{}", "F{}-B"]).format(rng.randint(100, 99999))
    fields = {"invoice_number": number, "invoice_date": issued.isoformat(), "due_date": due.isoformat(),
              "vendor_name": company(rng), "customer_name": company(rng), "total_amount": total, "currency": style[1]}
    printed = {"invoice_number": number, "invoice_date": print_date(rng, issued), "due_date": print_date(rng, due),
               "vendor_name": fields["vendor_name"], "customer_name": fields["customer_name"],
               "total_amount": print_money(total, style), "currency": style[0]}
    if rng.random() < 0.15:  # some invoices give no due date: the answer is null
        fields["due_date"] = printed["due_date"] = None
    label = {k: rng.choice(v) for k, v in LABELS.items()}
    po = f"PO-{rng.randint(1000, 99999)}"
    meta = [(label["invoice_number"], number), (label["invoice_date"], printed["invoice_date"])]
    if printed["due_date"]:
        meta.append((label["due_date"], printed["due_date"]))
    customer_id = f"C{rng.randint(1000, 9999)}"
    meta += [(label["po_number"], po), (label["customer_id"], customer_id)]
    rng.shuffle(meta)
    money = [(label["subtotal"], print_money(subtotal, style)), (label["tax"], print_money(tax, style)),
             (label["total_amount"], printed["total_amount"])]
    item_lines = [f"{name:<22}{qty:>4}  {print_money(price, style):>14}" for name, qty, price in items]
    vendor, customer = fields["vendor_name"], fields["customer_name"]
    address = f"{rng.randint(1, 250)} {rng.choice(['High Street', 'Main Road', 'Harbour Way', 'Mill Lane'])}"
    page = Page(rng, vendor=vendor, customer=customer, address=address, meta=meta, money=money,
                item_lines=item_lines, printed=printed, number=number, po=po, label=label, fields=fields,
                customer_id=customer_id, style=style, items=items, amounts=(subtotal, tax, total))
    lines = _layout("invoice", layout)(page)
    return Synthetic("invoice", layout, fields, printed, lines, subject=", ".join(name for name, _, _ in items))


def contract(rng: random.Random, layout: str) -> Synthetic:
    style = rng.choice(MONEY_STYLES)
    signed = some_date(rng)
    effective = signed + datetime.timedelta(days=rng.randint(1, 60))
    end = effective + datetime.timedelta(days=365 * rng.randint(1, 3))
    value = round(rng.uniform(2000, 250000), 2)
    fields = {"provider_name": company(rng), "client_name": company(rng), "effective_date": effective.isoformat(),
              "end_date": end.isoformat(), "contract_value": value, "currency": style[1],
              "governing_law": rng.choice(LAWS)}
    printed = {**fields, "effective_date": print_date(rng, effective), "end_date": print_date(rng, end),
               "contract_value": print_money(value, style), "currency": style[0]}
    signed_text, number = print_date(rng, signed), f"AGR-{rng.randint(100, 9999)}"
    title = rng.choice(["SERVICE AGREEMENT", "MASTER SERVICES AGREEMENT", "CONSULTING CONTRACT"])
    page = Page(rng, fields=fields, printed=printed, signed_text=signed_text, number=number, title=title,
                style=style, signed=signed)
    rows = _layout("contract", layout)(page)
    return Synthetic("contract", layout, fields, printed, _rows_to_lines(rows), subject=title.lower())


def ticket(rng: random.Random, layout: str) -> Synthetic:
    opened = some_date(rng)
    number = rng.choice(["TCK-{}", "#{}", "SR{}", "CASE-{}"]).format(rng.randint(1000, 999999))
    fields = {"ticket_id": number, "customer_name": person(rng), "opened_date": opened.isoformat(),
              "priority": rng.choice(PRIORITIES), "product": rng.choice(PRODUCTS), "subject": rng.choice(SUBJECTS)}
    printed = {**fields, "opened_date": print_date(rng, opened)}
    label = {k: rng.choice(v) for k, v in LABELS.items()}
    order, agent = f"ORD-{rng.randint(10000, 99999)}", person(rng)
    page = Page(rng, fields=fields, printed=printed, number=number, label=label, order=order, agent=agent,
                opened=opened)
    rows = _layout("ticket", layout)(page)
    return Synthetic("ticket", layout, fields, printed, _rows_to_lines(rows), subject=fields["subject"])


def _rows_to_lines(rows: list) -> list:
    """A layout's text rows, one under the other; a layout that places its own lines returns tuples."""
    return [row if isinstance(row, tuple) else (18, 22 + 6 * i, row, "", 10) for i, row in enumerate(rows)]


class Page:
    """What one document's layout draws from: its values, labels and the seeded ``rng`` (a
    layout that draws more from ``rng`` must do so last, so the values stay the same)."""

    def __init__(self, rng: random.Random, **values):
        self.rng = rng
        self.__dict__.update(values)


# Layouts: kind -> name -> function(Page) -> lines to draw (invoices) or text rows (contracts,
# tickets). The held-out layouts live in ``synthetic_heldout`` and register themselves there, so
# whoever reads or extends the tune layouts here does not read the layouts results are reported on.
LAYOUTS: dict[str, dict] = {"invoice": {}, "contract": {}, "ticket": {}}


def layout(kind: str, name: str):
    def register(draw):
        LAYOUTS[kind][name] = draw
        return draw
    return register


def _layout(kind: str, name: str):
    if name not in LAYOUTS[kind] and name in HELDOUT_LAYOUTS.get(kind, []):
        import slmkit.docs.synthetic_heldout  # noqa: F401  (registers the held-out layouts)
    try:
        return LAYOUTS[kind][name]
    except KeyError:
        raise ValueError(f"unknown {kind} layout {name!r}") from None


@layout("invoice", "classic")
def _invoice_classic(p: Page) -> list:
    lines = [(15, 20, p.vendor, "B", 14), (15, 26, p.address, "", 9), (140, 20, "INVOICE", "B", 16)]
    lines += [(120, 32 + 6 * i, f"{k}: {v}", "", 10) for i, (k, v) in enumerate(p.meta)]
    lines += [(15, 45, "Bill to:", "B", 10), (15, 51, p.customer, "", 10)]
    lines += [(15, 80 + 6 * i, text, "C", 9) for i, text in enumerate(p.item_lines)]
    lines += [(120, 120 + 6 * i, f"{k}: {v}", "B" if i == 2 else "", 10) for i, (k, v) in enumerate(p.money)]
    return lines


@layout("invoice", "printout")
def _invoice_printout(p: Page) -> list:
    rows = [p.vendor.upper(), p.address, "", "I N V O I C E", ""]
    rows += [f"{k.upper():.<24} {v}" for k, v in p.meta]
    rows += ["", f"{'SOLD TO':.<24} {p.customer}", "", *p.item_lines, ""]
    rows += [f"{k.upper():.<24} {v}" for k, v in p.money]
    return [(15, 20 + 5 * i, text, "C", 9) for i, text in enumerate(rows)]


@layout("invoice", "header-table")
def _invoice_header_table(p: Page) -> list:
    lines = [(15, 18, f"Invoice from {p.vendor}", "B", 13), (15, 25, f"To: {p.customer}", "", 10)]
    x = 15
    for key, value in p.meta:
        lines += [(x, 40, key, "B", 8), (x, 46, value, "", 8)]
        x += 38
    lines.append((12, 35, "RECT", 190, 14))
    lines += [(15, 65 + 6 * i, text, "C", 9) for i, text in enumerate(p.item_lines)]
    lines += [(15, 100 + 6 * i, f"{k}  {v}", "", 10) for i, (k, v) in enumerate(p.money)]
    return lines


@layout("contract", "agreement")
def _contract_agreement(p: Page) -> list:
    rng, fields, printed = p.rng, p.fields, p.printed
    return [p.title, f"Agreement no. {p.number}", "",
            f"This agreement is signed on {p.signed_text} between",
            f"{fields['provider_name']} (the \"Provider\") and", f"{fields['client_name']} (the \"Client\").", "",
            f"1. Term. The services start on {printed['effective_date']} (the Effective Date)",
            f"   and end on {printed['end_date']} unless renewed.",
            f"2. Fees. The Client pays a total fee of {printed['contract_value']}, invoiced monthly.",
            f"3. Notice. Either party may terminate with {rng.choice([30, 60, 90])} days written notice.",
            f"4. Law. This agreement is governed by the laws of {fields['governing_law']}.", "",
            "Signed for the Provider                Signed for the Client", f"{person(rng)}    {person(rng)}"]


@layout("ticket", "form")
def _ticket_form(p: Page) -> list:
    fields, label = p.fields, p.label
    return ["SUPPORT TICKET", "", f"{label['ticket_id']}: {p.number}", f"{label['opened_date']}: {p.printed['opened_date']}",
            f"Customer: {fields['customer_name']}", f"Order number: {p.order}", f"Priority: {fields['priority']}",
            f"Product: {fields['product']}", f"Subject: {fields['subject']}", f"Assigned agent: {p.agent}", "",
            "Description:", "The customer reports the problem above and asks for help.",
            f"Related order {p.order}; previous case {p.rng.randint(1000, 9999)}."]


from slmkit.docs import synthetic_tune  # noqa: E402, F401  (registers the other tune layouts)

PARTY_FIELDS = {"invoice": ["vendor_name", "customer_name"], "contract": ["provider_name", "client_name"],
                "ticket": ["customer_name"]}
MAKERS = {"invoice": invoice, "contract": contract, "ticket": ticket}


def make_documents(count: int, layouts: dict[str, list[str]], seed: int) -> list[Synthetic]:
    """``count`` documents, kinds and layouts taken in turn from ``layouts``."""
    rng = random.Random(seed)
    plan = [(kind, layout) for kind, names in layouts.items() for layout in names]
    return [MAKERS[kind](rng, layout) for kind, layout in (plan[i % len(plan)] for i in range(count))]


def write_pdf(document: Synthetic, path) -> None:
    """Draw ``document`` on one A4 page with fpdf2's core fonts (Helvetica, Courier)."""
    from fpdf import FPDF

    pdf = FPDF(format="A4", unit="mm")
    pdf.set_compression(True)
    pdf.add_page()
    for x, y, text, *style in document.lines:
        if text == "RECT":
            pdf.rect(x, y, *style)
            continue
        font, size = style
        pdf.set_font("Courier" if font == "C" else "Helvetica", "B" if font == "B" else "", size)
        pdf.text(x, y, text)
    pdf.output(str(path))
