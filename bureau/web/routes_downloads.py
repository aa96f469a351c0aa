"""Evidence downloads of a factory's year: the HTML report, its PDF, the sealed folder (zip).

Every download writes an audit row (who, which file, which factory and year). The HTML and
the folder are the same ones `tieragent bureau evidence` writes (bureau.html_report,
bureau.evidence_export); the PDF is `bureau.pdf_report.render_pdf` of that HTML, imported
when asked for, so the portal answers 501 while that module is not installed.
"""

from __future__ import annotations

import importlib
import io
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from bureau.annual import AnnualError
from bureau.evidence_export import export_evidence
from bureau.html_report import render_html
from bureau.receipts import BureauKeyMissing, load_bureau_key
from bureau.web.auth import Principal, Refused, portal_of, principal
from bureau.web.factory_view import baseline_year, default_through, evaluate, policy_files
from bureau.web.routes_factories import _THROUGH, _YEAR, _year_through

router = APIRouter(tags=["downloads"])


def _audit(request: Request, who: Principal, what: str, target: str) -> None:
    portal_of(request).accounts().audit(who.user.username, what, target)


def _evidence_html(request: Request, factory_id: str, year: int | None,
                   through: str | None) -> tuple[str, str]:
    """(the evidence report HTML, the download's base name)."""
    chosen, last = _year_through(request, factory_id, year, through)
    portal = portal_of(request)
    try:
        result, _ = evaluate(portal.store(), portal.settings, factory_id, chosen, last)
    except AnnualError as error:
        raise Refused(409, str(error)) from None
    return render_html(result.to_json()), f"evidence-{factory_id}-{chosen}"


def _attachment(body: bytes, media: str, name: str) -> Response:
    return Response(body, media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/factories/{factory_id}/evidence.html")
def evidence_html(
    request: Request, factory_id: str, year: int | None = _YEAR, through: str | None = _THROUGH,
    who: Principal = Depends(principal),
) -> Response:
    """The evidence report (HTML, self-contained) of the factory's year."""
    html, name = _evidence_html(request, factory_id, year, through)
    _audit(request, who, "download.evidence.html", name)
    return _attachment(html.encode("utf-8"), "text/html; charset=utf-8", f"{name}.html")


def _pdf_renderer() -> Callable[[str], bytes] | None:
    """`bureau.pdf_report.render_pdf`, or None while that module is not installed."""
    try:
        module = importlib.import_module("bureau.pdf_report")
    except ModuleNotFoundError as error:
        if error.name not in ("bureau.pdf_report", "weasyprint"):
            raise
        return None
    render: Callable[[str], bytes] = module.render_pdf
    return render


@router.get("/factories/{factory_id}/evidence.pdf")
def evidence_pdf(
    request: Request, factory_id: str, year: int | None = _YEAR, through: str | None = _THROUGH,
    who: Principal = Depends(principal),
) -> Response:
    """The evidence report as PDF (A4). 501 while the PDF module is not installed."""
    render = _pdf_renderer()
    if render is None:
        chosen, _ = _year_through(request, factory_id, year, through)
        _audit(request, who, "download.evidence.pdf.unavailable",
               f"evidence-{factory_id}-{chosen}")
        raise Refused(501, "PDF output is not available on this bureau: the module "
                      "bureau.pdf_report (WeasyPrint) is not installed.")
    html, name = _evidence_html(request, factory_id, year, through)
    pdf = render(html)
    _audit(request, who, "download.evidence.pdf", name)
    return _attachment(pdf, "application/pdf", f"{name}.pdf")


@router.get("/factories/{factory_id}/evidence.zip")
def evidence_zip(
    request: Request, factory_id: str, year: int | None = _YEAR, through: str | None = _THROUGH,
    who: Principal = Depends(principal),
) -> Response:
    """The sealed evidence folder (as `tieragent bureau evidence` writes it), zipped; check
    it with `tieragent verify DIR --bureau-key bureau.jwk`."""
    chosen, last = _year_through(request, factory_id, year, through)
    portal = portal_of(request)
    if portal.settings.bureau_key is None:
        raise Refused(503, "This portal was started without --key (the bureau's key), so it "
                      "cannot seal an evidence folder.")
    try:
        key = load_bureau_key(portal.settings.bureau_key)
    except BureauKeyMissing as error:
        raise Refused(503, str(error)) from None
    files = policy_files(portal.settings, factory_id)
    name = f"evidence-{factory_id}-{chosen}"
    with tempfile.TemporaryDirectory(prefix="tieragent-evidence-") as tmp:
        out = Path(tmp) / name
        try:
            export_evidence(
                portal.store(), factory_id, chosen, out, files,
                baseline_year=baseline_year(chosen, files),
                through=last if last is not None else default_through(chosen),
                bureau_key=key,
            )
        except AnnualError as error:
            raise Refused(409, str(error)) from None
        body = _zip(out, name)
    _audit(request, who, "download.evidence.zip", name)
    return _attachment(body, "application/zip", f"{name}.zip")


def _zip(folder: Path, name: str) -> bytes:
    """The folder's files under `name/`, in path order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.write(path, f"{name}/{path.relative_to(folder).as_posix()}")
    return buffer.getvalue()
