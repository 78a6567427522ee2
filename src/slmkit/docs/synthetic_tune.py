"""More tune layouts for :mod:`slmkit.docs.synthetic`: receipts, two-column invoices with boxed
totals, contracts as key-term tables and as clause lists, tickets exported from a help desk,
sent through a web form or opened in a live chat.

Each layout also varies what the older layouts keep fixed: its own label wordings, how parties
are introduced (Seller/Buyer, Supplier/Customer, Billed by/Billed to, a numbered parties block
that sometimes names the client first), more date formats (US month first, abbreviated months)
and money styles (codes after the number, ``US$``), and more distractors (a ship-to or contact
beside the customer, a monthly instalment beside the contract value, an update date beside the
opening date). The gold answers stay what they were: a layout reprints a value only in another
format of the same date, amount and currency, by :func:`restyle`.

Everything here is drawn from ``Page.rng`` after the document's values, so the values and the
other layouts' documents are unchanged (the held-out documents stay byte for byte the same).
"""

from __future__ import annotations

import datetime

from slmkit.docs.synthetic import DATE_FORMATS, MONEY_STYLES, Page, company, layout, person, print_date, print_money

# "{d}": the day without a leading zero (strftime's "%-d" is not portable)
MORE_DATE_FORMATS = [*DATE_FORMATS, "%m/%d/%Y", "%d %b %Y", "%d %B, %Y", "%Y/%m/%d", "%B {d}, %Y", "{d} %B %Y"]
MORE_MONEY_STYLES = [*MONEY_STYLES, ("USD", "USD", "suffix ", ",", "."), ("US$", "USD", "prefix", ",", "."),
                     ("GBP", "GBP", "prefix ", ",", "."), ("GBP", "GBP", "suffix ", ",", "."),
                     ("CHF", "CHF", "suffix ", "'", "."), ("$", "USD", "prefix ", ",", ".")]
WORDS = {
    "invoice_number": ["Invoice ID", "Document No.", "Invoice ref.", "Tax Invoice No.", "Invoice Number", "Receipt No."],
    "invoice_date": ["Invoice date", "Billing date", "Dated", "Issue date", "Date", "Invoice Date"],
    "due_date": ["Payment due by", "Due on", "Please pay by", "Due date", "Payable by", "Terms: due"],
    "total_amount": ["Amount payable", "TOTAL", "Total (incl. tax)", "Amount to pay", "Total due", "Balance to pay"],
    "subtotal": ["Net", "Subtotal", "Total before tax", "Net total", "Goods"],
    "tax": ["VAT", "Tax 19%", "GST", "Sales tax", "VAT 20%"],
    "po_number": ["Order No.", "PO", "Purchase order", "Your ref.", "Customer PO"],
    "customer_id": ["Customer no.", "Account", "Client ID", "Cust. ID", "Account number"],
    "vendor": ["From", "Seller", "Supplier", "Billed by", "Issued by", "Vendor"],
    "customer": ["To", "Buyer", "Client", "Billed to", "Customer", "Invoice to", "Bill to"],
    "provider": ["Service provider", "Supplier", "Contractor", "Provider", "Consultant", "Vendor"],
    "client": ["Customer", "Client", "Company", "Buyer", "Purchaser"],
    "effective_date": ["Start date", "Commencement date", "Effective date", "Services begin", "Term start"],
    "end_date": ["End date", "Expiry date", "Term ends", "Expires", "Valid until"],
    "contract_value": ["Total contract value", "Total fees", "Contract price", "Total consideration", "Fee (total)"],
    "governing_law": ["Governing law", "Applicable law", "Jurisdiction", "Law"],
    "signed": ["Date signed", "Signature date", "Executed on", "Date of signature"],
    "ticket_id": ["Ticket ID", "Case number", "Request #", "Ticket no.", "Incident", "Reference"],
    "customer_name": ["Requester", "Reported by", "Contact", "Customer", "Requested by"],
    "opened_date": ["Created", "Opened", "Received", "Date opened", "Logged on"],
    "priority": ["Priority", "Urgency", "Severity"],
    "product": ["Product", "Product / service", "Component", "Application"],
    "subject": ["Subject", "Title", "Summary", "Issue"],
    "agent": ["Assignee", "Agent", "Owner", "Assigned to"],
}


def words(p: Page) -> dict:
    """One wording per label for this document."""
    return {key: p.rng.choice(options) for key, options in WORDS.items()}


def restyle(p: Page, dates: dict, amounts: dict) -> dict:
    """Reprint the dates (``field -> datetime.date``) in one of :data:`MORE_DATE_FORMATS` and the
    amounts (``name -> float``) in a money style of the same currency; the printed answers in
    ``p.printed`` follow (the gold values do not change). Returns ``name -> text``."""
    style = p.rng.choice([s for s in MORE_MONEY_STYLES if s[1] == p.style[1]])
    out = {}
    for name, day in dates.items():
        text = print_date(p.rng, day, MORE_DATE_FORMATS).replace("{d}", str(day.day))
        out[name] = text
        if p.printed.get(name) is not None:
            p.printed[name] = text
    for name, amount in amounts.items():
        out[name] = print_money(amount, style)
        if name in p.printed:
            p.printed[name] = out[name]
    p.printed["currency"] = style[0]
    out["style"] = style
    return out


def _invoice_values(p: Page) -> tuple[dict, dict]:
    subtotal, tax, total = p.amounts
    dates = {"invoice_date": datetime.date.fromisoformat(p.fields["invoice_date"])}
    if p.printed["due_date"] is not None:
        dates["due_date"] = datetime.date.fromisoformat(p.fields["due_date"])
    text = restyle(p, dates, {"total_amount": total, "subtotal": subtotal, "tax": tax})
    items = [f"{name:<20}{qty:>3}  {print_money(price, text['style']):>14}" for name, qty, price in p.items]
    return text, {"items": items}


@layout("invoice", "receipt")
def _invoice_receipt(p: Page) -> list:
    w = words(p)
    text, extra = _invoice_values(p)
    rule = "-" * 38
    rows = [p.vendor, p.address, f"Tel. 0{p.rng.randint(100000000, 999999999)}", "",
            p.rng.choice(["RECEIPT / TAX INVOICE", "SALES RECEIPT", "INVOICE"]),
            f"{w['invoice_number']}: {p.number}", f"{w['invoice_date']}: {text['invoice_date']}"]
    if "due_date" in text:
        rows.append(f"{w['due_date']}: {text['due_date']}")
    rows += [f"{w['customer']}: {p.customer}", f"{w['po_number']}: {p.po}", rule, *extra["items"], rule,
             f"{w['subtotal']:<24}{text['subtotal']:>14}", f"{w['tax']:<24}{text['tax']:>14}",
             f"{w['total_amount'].upper():<24}{text['total_amount']:>14}", rule,
             f"Card ****{p.rng.randint(1000, 9999)}   Served by {person(p.rng)}", "Thank you for your business!"]
    return [(45, 20 + 5 * i, row, "C", 9) for i, row in enumerate(rows)]


@layout("invoice", "two-column")
def _invoice_two_column(p: Page) -> list:
    w = words(p)
    text, extra = _invoice_values(p)
    ship_to = p.rng.choice([company(p.rng), p.customer])
    lines = [(15, 18, "INVOICE", "B", 18),
             (15, 32, f"{w['vendor']}:", "B", 9), (15, 38, p.vendor, "", 10), (15, 43, p.address, "", 9),
             (115, 32, f"{w['customer']}:", "B", 9), (115, 38, p.customer, "", 10),
             (115, 43, f"Attn: {person(p.rng)}", "", 9), (115, 48, f"Ship to: {ship_to}", "", 9)]
    meta = [(w["invoice_number"], p.number), (w["invoice_date"], text["invoice_date"]),
            (w["po_number"], p.po), (w["customer_id"], p.customer_id)]
    if "due_date" in text:
        meta.insert(2, (w["due_date"], text["due_date"]))
    lines += [(15, 60 + 6 * i, f"{key}: {value}", "", 9) for i, (key, value) in enumerate(meta)]
    top = 60 + 6 * len(meta) + 6
    lines += [(15, top, f"{'Description':<20}{'Qty':>3}  {'Amount':>14}", "C", 9)]
    lines += [(15, top + 6 + 5 * i, row, "C", 9) for i, row in enumerate(extra["items"])]
    bottom = top + 12 + 5 * len(extra["items"])
    lines += [(120, bottom, f"{w['subtotal']}: {text['subtotal']}", "", 9),
              (120, bottom + 6, f"{w['tax']}: {text['tax']}", "", 9),
              (120, bottom + 14, f"{w['total_amount']}: {text['total_amount']}", "B", 11),
              (117, bottom + 9, "RECT", 80, 8)]
    return lines


def _contract_values(p: Page) -> dict:
    dates = {"effective_date": datetime.date.fromisoformat(p.fields["effective_date"]),
             "end_date": datetime.date.fromisoformat(p.fields["end_date"]), "signed": p.signed}
    value = p.fields["contract_value"]
    return restyle(p, dates, {"contract_value": value, "monthly": round(value / 12, 2)})


@layout("contract", "key-terms")
def _contract_key_terms(p: Page) -> list:
    w = words(p)
    text = _contract_values(p)
    fields = p.fields
    parties = [(w["provider"], fields["provider_name"]), (w["client"], fields["client_name"])]
    if p.rng.random() < 0.4:  # the client first, as an order form often does
        parties.reverse()
    terms = [(w["effective_date"], text["effective_date"]), (w["end_date"], text["end_date"]),
             (w["contract_value"], text["contract_value"]), ("Monthly instalment", text["monthly"]),
             (w["governing_law"], fields["governing_law"])]
    rows = [("Contract no.", p.number), (w["signed"], text["signed"]), *parties, *terms]
    title = p.rng.choice(["ORDER FORM", "CONTRACT SUMMARY", "KEY TERMS"])
    lines = [(18, 20, title, "B", 13), (18, 27, p.title.title(), "", 10)]
    for i, (key, value) in enumerate(rows):
        lines += [(18, 38 + 7 * i, key, "B", 9), (75, 38 + 7 * i, value, "", 9)]
    end = 38 + 7 * len(rows)
    lines += [(15, 32, "RECT", 180, end - 34),
              (18, end + 8, "The terms and conditions attached form part of this contract.", "", 9),
              (18, end + 20, f"Signed: {person(p.rng)}", "", 9), (110, end + 20, f"Signed: {person(p.rng)}", "", 9)]
    return lines


@layout("contract", "clauses")
def _contract_clauses(p: Page) -> list:
    text = _contract_values(p)
    fields = p.fields
    provider_role, client_role = p.rng.choice([("Supplier", "Customer"), ("Contractor", "Company"),
                                               ("Consultant", "Client"), ("Seller", "Buyer"),
                                               ("Service Provider", "Customer")])
    parties = [f"{fields['provider_name']}, of {p.rng.randint(1, 250)} Market Street (the \"{provider_role}\")",
               f"{fields['client_name']} (the \"{client_role}\")"]
    if p.rng.random() < 0.4:
        parties.reverse()
    return [p.title, "", f"THIS AGREEMENT is dated {text['signed']} and made BETWEEN:",
            f"(1) {parties[0]}; and", f"(2) {parties[1]}.", "",
            "1. DURATION",
            f"1.1 This Agreement commences on {text['effective_date']} and expires on {text['end_date']}.",
            "2. CHARGES",
            f"2.1 The {client_role} shall pay the {provider_role} {text['contract_value']} in total,",
            f"     in twelve instalments of {text['monthly']}.",
            "3. TERMINATION",
            f"3.1 Either party may end this Agreement on {p.rng.choice([30, 60, 90])} days notice.",
            "4. GOVERNING LAW",
            f"4.1 This Agreement is governed by the law of {fields['governing_law']}.", "",
            f"Ref. {p.number}", f"For the {provider_role}: {person(p.rng)}      For the {client_role}: {person(p.rng)}"]


def _ticket_values(p: Page) -> dict:
    opened = p.opened
    later = opened + datetime.timedelta(days=p.rng.randint(1, 20))
    return restyle_dates(p, {"opened_date": opened, "updated": later})


def restyle_dates(p: Page, dates: dict) -> dict:
    """:func:`restyle` for a document without amounts."""
    out = {}
    for name, day in dates.items():
        out[name] = print_date(p.rng, day, MORE_DATE_FORMATS).replace("{d}", str(day.day))
        if p.printed.get(name) is not None:
            p.printed[name] = out[name]
    return out


def _email(name: str) -> str:
    first, last = name.lower().replace("'", "").split(" ", 1)
    return f"{first}.{last}@example.com"


@layout("ticket", "helpdesk-export")
def _ticket_helpdesk(p: Page) -> list:
    w = words(p)
    text = _ticket_values(p)
    fields = p.fields
    status = p.rng.choice(["Open", "Pending", "In progress", "Waiting on customer"])
    rows = [(w["ticket_id"], p.number), ("Status", status), (w["priority"], fields["priority"]),
            (w["customer_name"], f"{fields['customer_name']} <{_email(fields['customer_name'])}>"),
            (w["agent"], p.agent), (w["opened_date"], text["opened_date"]), ("Last updated", text["updated"]),
            (w["product"], fields["product"]), (w["subject"], fields["subject"]), ("Related order", p.order)]
    lines = [(18, 18, p.rng.choice(["Helpdesk export", "Ticket details", "Service desk - request"]), "B", 12)]
    lines += [(18, 28 + 6 * i, f"{key}:", "", 9) for i, (key, _) in enumerate(rows)]
    lines += [(62, 28 + 6 * i, value, "", 9) for i, (_, value) in enumerate(rows)]
    thread = 28 + 6 * len(rows) + 8
    lines += [(18, thread, "Conversation", "B", 10),
              (18, thread + 7, f"{fields['customer_name']} wrote on {text['opened_date']}:", "", 9),
              (22, thread + 13, f"Since yesterday we have this problem with {fields['product']}.", "", 9),
              (18, thread + 21, f"{p.agent} replied on {text['updated']}:", "", 9),
              (22, thread + 27, "Thank you, we are looking into it and will update this ticket.", "", 9)]
    return lines


@layout("ticket", "web-form")
def _ticket_web_form(p: Page) -> list:
    text = _ticket_values(p)
    fields = p.fields
    name_label = p.rng.choice(["Full name", "Your name", "Name"])
    urgency = p.rng.choice(["How urgent is it?", "Priority", "Urgency"])
    return ["Contact form submission", f"Form: {p.rng.choice(['Technical support', 'Help request', 'Report a problem'])}",
            f"Submitted: {text['opened_date']}", "",
            f"{name_label}: {fields['customer_name']}", f"E-mail: {_email(fields['customer_name'])}",
            f"Order no.: {p.order}", f"Which product?: {fields['product']}", f"{urgency}: {fields['priority']}",
            f"Short description: {fields['subject']}",
            "Message: It worked before, now it does not. Please call me back.", "",
            f"Your request was logged as {p.number}.",
            f"An agent ({p.agent}) will answer by {text['updated']}."]


@layout("ticket", "chat")
def _ticket_chat(p: Page) -> list:
    text = _ticket_values(p)
    fields = p.fields
    hour = p.rng.randint(8, 17)
    first = fields["customer_name"].split()[0]
    return ["Live chat transcript", f"Chat started {text['opened_date']} at {hour}:02",
            f"Visitor: {fields['customer_name']}", f"Operator: {p.agent}", f"Topic: {fields['subject']}", "",
            f"[{hour}:02] {fields['customer_name']}: Hello, I need help with {fields['product']}.",
            f"[{hour}:03] {p.agent}: Hi {first}, can you give me your order number?",
            f"[{hour}:04] {fields['customer_name']}: It is {p.order}.",
            f"[{hour}:06] {p.agent}: Thanks. I have opened ticket {p.number} for you.",
            f"[{hour}:06] {p.agent}: Priority set to {fields['priority']}.",
            f"[{hour}:07] {fields['customer_name']}: Thank you!", "",
            f"Transcript e-mailed to {_email(fields['customer_name'])}"]
