"""The console's own words (page titles, navigation, column headers, buttons) in French,
Spanish and Arabic, keyed by their English text.

Only short, fixed terms are here, the ones a translation can be trusted for. The
catalogue's terms (kinds, sections, fields, measures, refusal grounds, request states,
steps, priorities, deadlines) come from the signed policy instead (:mod:`broker.console.lang`).
Sentences (verdicts, explanations, the footer) and anything not listed stay in English:
:func:`word` falls back to the English text.
"""

from __future__ import annotations

from typing import Final

# English -> (French, Spanish, Arabic)
_WORDS: Final[dict[str, tuple[str, str, str]]] = {
    # page titles and navigation
    "Overview": ("Vue d'ensemble", "Resumen", "نظرة عامة"),
    "Log health": ("État du journal", "Estado del registro", "سلامة السجل"),
    "Flows": ("Flux", "Flujos", "التدفقات"),
    "Notices": ("Notices", "Notificaciones", "النشرات"),
    "Policy": ("Politique", "Política", "السياسة"),
    "Registry": ("Registre des agences", "Registro de agencias", "سجل الجهات"),
    "Queues": ("Files d'attente", "Colas", "قوائم الانتظار"),
    "Verify a proof": ("Vérifier une preuve", "Verificar una prueba", "التحقق من إثبات"),
    "Requests": ("Demandes", "Solicitudes", "الطلبات"),
    "Confirm": ("Confirmer", "Confirmar", "تأكيد"),
    # the language selector and its refusal
    "Language": ("Langue", "Idioma", "اللغة"),
    "Unknown language": ("Langue inconnue", "Idioma desconocido", "لغة غير معروفة"),
    # column headers and filters of the pages that show catalogue terms
    "kind": ("type", "tipo", "النوع"),
    "section": ("section", "sección", "القسم"),
    "sections": ("sections", "secciones", "الأقسام"),
    "recipient": ("destinataire", "destinatario", "المستلم"),
    "originator": ("émetteur", "emisor", "المُصدِر"),
    "notice": ("notice", "notificación", "النشرة"),
    "request": ("demande", "solicitud", "الطلب"),
    "issuer": ("autorité d'émission", "autoridad de emisión", "السلطة المُصدِرة"),
    "executor": ("autorité d'exécution", "autoridad de ejecución", "السلطة المنفِّذة"),
    "priority": ("priorité", "prioridad", "الأولوية"),
    "state": ("état", "estado", "الحالة"),
    "grounds": ("motifs", "motivos", "الأسباب"),
    "steps": ("étapes", "pasos", "الخطوات"),
    "last step": ("dernière étape", "último paso", "آخر خطوة"),
    "outcome": ("résultat", "resultado", "النتيجة"),
    "notices": ("notices", "notificaciones", "النشرات"),
    "all": ("tous", "todos", "الكل"),
    "filter": ("filtrer", "filtrar", "تصفية"),
    "show": ("afficher", "mostrar", "عرض"),
    # the policy page's kinds, with their sections and fields
    "Kinds": ("Types", "Tipos", "الأنواع"),
    "header fields": ("champs d'en-tête", "campos de encabezado", "حقول الترويسة"),
    "content fields": ("champs du contenu", "campos del contenido", "حقول المحتوى"),
}
_COLUMN: Final = {"fr": 0, "es": 1, "ar": 2}


def word(text: str, lang: str) -> str:
    """`text` (the English word) in `lang`, or `text` itself when it is not translated."""
    column = _COLUMN.get(lang)
    entry = _WORDS.get(text)
    if column is None or entry is None:
        return text
    return entry[column]


def translated() -> frozenset[str]:
    """The English words this module translates (for the tests and the docs)."""
    return frozenset(_WORDS)
