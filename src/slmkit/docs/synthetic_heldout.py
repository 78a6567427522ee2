"""The held-out layouts of :mod:`slmkit.docs.synthetic`: results are reported on documents drawn
in these, so nothing is tuned on them. Keep them apart from the tune layouts; a new tune layout
is written without reading this file."""

from __future__ import annotations

from slmkit.docs.synthetic import Page, layout, person


@layout("invoice", "sidebar")
def _invoice_sidebar(p: Page) -> list:
    lines = [(12, 20, p.vendor, "B", 11), (12, 26, p.address, "", 8), (12, 40, "Customer", "B", 9), (12, 46, p.customer, "", 9)]
    lines.append((10, 14, "RECT", 62, 40))
    lines += [(80, 20 + 6 * i, f"{k} - {v}", "", 9) for i, (k, v) in enumerate(p.meta)]
    lines += [(80, 60 + 6 * i, text, "C", 8) for i, text in enumerate(p.item_lines)]
    lines += [(80, 95 + 6 * i, f"{k} {v}", "", 9) for i, (k, v) in enumerate(p.money)]
    return lines


@layout("invoice", "letter")
def _invoice_letter(p: Page) -> list:
    printed, label, money = p.printed, p.label, p.money
    due_text = f"by {printed['due_date']}" if printed["due_date"] else "on receipt"
    rows = [p.vendor, p.address, "", f"To {p.customer}", "", f"Subject: our invoice {p.number}", "",
            "Dear Sir or Madam,", f"please find below our invoice {p.number} of {printed['invoice_date']}",
            f"(your reference {p.po}). The {label['subtotal'].lower()} is {money[0][1]}, {label['tax']} {money[1][1]}.",
            f"Please pay the {label['total_amount'].lower()} of {printed['total_amount']} {due_text}.",
            "", "Kind regards,", person(p.rng)]
    return [(20, 25 + 6 * i, text, "", 10) for i, text in enumerate(rows)]


@layout("contract", "cover-sheet")
def _contract_cover_sheet(p: Page) -> list:
    fields, printed = p.fields, p.printed
    return [f"CONTRACT SUMMARY - {p.title.title()}", "", f"Reference            {p.number}",
            f"Service provider     {fields['provider_name']}", f"Customer             {fields['client_name']}",
            f"Date signed          {p.signed_text}", f"Commencement date    {printed['effective_date']}",
            f"Expiry date          {printed['end_date']}", f"Contract value       {printed['contract_value']}",
            f"Jurisdiction         {fields['governing_law']}", "", "The full terms follow on the next pages."]


@layout("ticket", "email")
def _ticket_email(p: Page) -> list:
    fields = p.fields
    return [f"From: {fields['customer_name']} <support-request@example.com>", f"Sent: {p.printed['opened_date']}",
            f"Subject: [{p.number}] {fields['subject']}", f"Priority flag: {fields['priority']}", "",
            "Hello support team,", f"I am writing about {fields['product']} (order {p.order}).",
            "Please look into it as soon as you can.", "", "Thanks,", fields["customer_name"], "",
            f"-- routed to {p.agent}"]
