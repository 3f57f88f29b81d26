//! Localized labels: KPI names, funnel stages, section, table and chart titles.
//!
//! Four languages: English (`en`), German (`de`), Bosnian in Latin script (`bs`) and Serbian
//! in Cyrillic script (`sr`). Any other language falls back to English. A key without a
//! label has no `&'static` text of its own: [`label`] answers [`UNKNOWN_LABEL`] for it and
//! [`try_label`] answers `None`, so a caller that can show the raw key does so.

/// What [`label`] answers for a key it has no label for.
pub const UNKNOWN_LABEL: &str = "?";

/// The languages with labels of their own, in table column order.
const LANGUAGES: [&str; 4] = ["en", "de", "bs", "sr"];

/// `(key, [en, de, bs, sr])`.
const LABELS: &[(&str, [&str; 4])] = &[
    // KPIs (every key of `KPI_KEYS`).
    (
        "leads_in",
        ["New leads", "Neue Leads", "Novi leadovi", "Нови лидови"],
    ),
    (
        "qualified",
        [
            "Qualified",
            "Qualifiziert",
            "Kvalifikovani",
            "Квалификовани",
        ],
    ),
    (
        "hot",
        ["Hot leads", "Heiße Leads", "Vrući leadovi", "Врући лидови"],
    ),
    (
        "warm",
        ["Warm leads", "Warme Leads", "Topli leadovi", "Топли лидови"],
    ),
    (
        "cold",
        [
            "Cold leads",
            "Kalte Leads",
            "Hladni leadovi",
            "Хладни лидови",
        ],
    ),
    (
        "average_score",
        [
            "Average score",
            "Durchschnittlicher Score",
            "Prosječan skor",
            "Просечан скор",
        ],
    ),
    (
        "calls_placed",
        [
            "Calls placed",
            "Getätigte Anrufe",
            "Obavljeni pozivi",
            "Обављени позиви",
        ],
    ),
    (
        "calls_connected",
        [
            "Calls connected",
            "Verbundene Anrufe",
            "Uspostavljeni pozivi",
            "Успостављени позиви",
        ],
    ),
    (
        "connect_rate",
        [
            "Connect rate",
            "Erreichbarkeitsquote",
            "Stopa uspostave",
            "Стопа успоставе",
        ],
    ),
    (
        "average_call_duration",
        [
            "Average call duration",
            "Durchschnittliche Gesprächsdauer",
            "Prosječno trajanje poziva",
            "Просечно трајање позива",
        ],
    ),
    (
        "call_cost",
        [
            "Call cost",
            "Anrufkosten",
            "Troškovi poziva",
            "Трошкови позива",
        ],
    ),
    (
        "appointments",
        ["Appointments", "Termine", "Termini", "Термини"],
    ),
    (
        "appointment_rate",
        [
            "Appointment rate",
            "Terminquote",
            "Stopa termina",
            "Стопа термина",
        ],
    ),
    (
        "converted",
        ["Converted", "Konvertiert", "Konvertovani", "Конвертовани"],
    ),
    (
        "emails_sent",
        [
            "Emails sent",
            "Gesendete E-Mails",
            "Poslani e-mailovi",
            "Послати имејлови",
        ],
    ),
    (
        "emails_delivered",
        [
            "Emails delivered",
            "Zugestellte E-Mails",
            "Isporučeni e-mailovi",
            "Испоручени имејлови",
        ],
    ),
    (
        "emails_opened",
        [
            "Emails opened",
            "Geöffnete E-Mails",
            "Otvoreni e-mailovi",
            "Отворени имејлови",
        ],
    ),
    (
        "emails_bounced",
        [
            "Emails bounced",
            "Unzustellbare E-Mails",
            "Odbijeni e-mailovi",
            "Одбијени имејлови",
        ],
    ),
    (
        "emails_unsubscribed",
        ["Unsubscribes", "Abmeldungen", "Odjave", "Одјаве"],
    ),
    (
        "nurture_enrolled",
        [
            "Nurture enrolled",
            "In Nurturing aufgenommen",
            "Uključeni u nurturing",
            "Укључени у неговање",
        ],
    ),
    (
        "nurture_exited",
        [
            "Nurture exited",
            "Nurturing beendet",
            "Izašli iz nurturinga",
            "Изашли из неговања",
        ],
    ),
    (
        "tasks_open",
        [
            "Open tasks",
            "Offene Aufgaben",
            "Otvoreni zadaci",
            "Отворени задаци",
        ],
    ),
    (
        "tasks_overdue",
        [
            "Overdue tasks",
            "Überfällige Aufgaben",
            "Zadaci u kašnjenju",
            "Задаци у кашњењу",
        ],
    ),
    (
        "pipeline_failures",
        [
            "Pipeline failures",
            "Pipeline-Fehler",
            "Greške u pipelineu",
            "Грешке у процесу",
        ],
    ),
    (
        "dead_jobs",
        [
            "Dead jobs",
            "Abgebrochene Jobs",
            "Neuspjeli poslovi",
            "Неуспели послови",
        ],
    ),
    (
        "minutes_saved",
        [
            "Time saved",
            "Eingesparte Zeit",
            "Ušteđeno vrijeme",
            "Уштеђено време",
        ],
    ),
    // Funnel stages not among the KPIs.
    (
        "customers_called",
        [
            "Customers called",
            "Angerufene Kunden",
            "Pozvani kupci",
            "Позвани купци",
        ],
    ),
    // Titles and headings.
    ("report", ["Report", "Bericht", "Izvještaj", "Извештај"]),
    ("period_daily", ["Daily", "Täglich", "Dnevni", "Дневни"]),
    (
        "period_weekly",
        ["Weekly", "Wöchentlich", "Sedmični", "Недељни"],
    ),
    (
        "period_monthly",
        ["Monthly", "Monatlich", "Mjesečni", "Месечни"],
    ),
    (
        "period_custom",
        [
            "Custom period",
            "Benutzerdefinierter Zeitraum",
            "Prilagođeni period",
            "Прилагођени период",
        ],
    ),
    ("period", ["Period", "Zeitraum", "Period", "Период"]),
    (
        "compared_with",
        [
            "Compared with",
            "Verglichen mit",
            "Poređeno sa",
            "Поређено са",
        ],
    ),
    (
        "time_zone",
        ["Time zone", "Zeitzone", "Vremenska zona", "Временска зона"],
    ),
    (
        "generated_at",
        ["Generated", "Erstellt", "Generisano", "Генерисано"],
    ),
    ("scope", ["Scope", "Umfang", "Obuhvat", "Обухват"]),
    (
        "no_data",
        [
            "No data for this period.",
            "Keine Daten für diesen Zeitraum.",
            "Nema podataka za ovaj period.",
            "Нема података за овај период.",
        ],
    ),
    (
        "kpis",
        [
            "Key figures",
            "Kennzahlen",
            "Ključni pokazatelji",
            "Кључни показатељи",
        ],
    ),
    ("kpi", ["Metric", "Kennzahl", "Pokazatelj", "Показатељ"]),
    ("value", ["Value", "Wert", "Vrijednost", "Вредност"]),
    (
        "previous",
        ["Previous", "Vorperiode", "Prethodno", "Претходно"],
    ),
    ("change", ["Change", "Veränderung", "Promjena", "Промена"]),
    (
        "leads_by_source",
        [
            "Leads by source",
            "Leads nach Quelle",
            "Leadovi po izvoru",
            "Лидови по извору",
        ],
    ),
    ("source", ["Source", "Quelle", "Izvor", "Извор"]),
    ("leads", ["Leads", "Leads", "Leadovi", "Лидови"]),
    ("share", ["Share", "Anteil", "Udio", "Удео"]),
    (
        "providers",
        [
            "Calls by provider",
            "Anrufe nach Anbieter",
            "Pozivi po provajderu",
            "Позиви по провајдеру",
        ],
    ),
    (
        "provider",
        ["Provider", "Anbieter", "Provajder", "Провајдер"],
    ),
    ("calls", ["Calls", "Anrufe", "Pozivi", "Позиви"]),
    (
        "average_duration",
        [
            "Avg. duration",
            "Ø Gesprächsdauer",
            "Prosj. trajanje",
            "Прос. трајање",
        ],
    ),
    ("cost", ["Cost", "Kosten", "Troškovi", "Трошкови"]),
    (
        "no_entries",
        ["No entries", "Keine Einträge", "Nema unosa", "Нема уноса"],
    ),
    ("charts", ["Charts", "Diagramme", "Grafikoni", "Графикони"]),
    (
        "chart_leads_per_day",
        [
            "Leads per day",
            "Leads pro Tag",
            "Leadovi po danu",
            "Лидови по дану",
        ],
    ),
    (
        "chart_leads_per_hour",
        [
            "Leads per hour",
            "Leads pro Stunde",
            "Leadovi po satu",
            "Лидови по сату",
        ],
    ),
    ("chart_funnel", ["Funnel", "Trichter", "Lijevak", "Левак"]),
    (
        "chart_dispositions",
        [
            "Call outcomes",
            "Anrufergebnisse",
            "Ishodi poziva",
            "Исходи позива",
        ],
    ),
    (
        "chart_score_distribution",
        [
            "Score distribution",
            "Score-Verteilung",
            "Raspodjela skora",
            "Расподела скора",
        ],
    ),
    ("axis_hour", ["Hour", "Stunde", "Sat", "Сат"]),
    ("axis_day", ["Day", "Tag", "Dan", "Дан"]),
    ("axis_score", ["Score", "Score", "Skor", "Скор"]),
    ("axis_count", ["Count", "Anzahl", "Broj", "Број"]),
    ("other", ["Other", "Sonstige", "Ostalo", "Остало"]),
    ("page", ["Page", "Seite", "Stranica", "Страна"]),
];

/// The index of `language` in [`LANGUAGES`] (English for anything else).
fn language_index(language: &str) -> usize {
    let primary = language.split(['-', '_']).next().unwrap_or(language);
    LANGUAGES
        .iter()
        .position(|l| l.eq_ignore_ascii_case(primary))
        .unwrap_or(0)
}

/// The label of `key` in `language`, or `None` when the key has none.
///
/// `language` is a primary language subtag (`de`) or a whole tag (`de-AT`); anything but
/// `de`, `bs` and `sr` reads English.
pub fn try_label(key: &str, language: &str) -> Option<&'static str> {
    let index = language_index(language);
    LABELS
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, texts)| texts.get(index).copied())
}

/// The label of `key` in `language` (see [`try_label`]); [`UNKNOWN_LABEL`] for a key that
/// has none.
///
/// Keys: every KPI key of [`crm_domain::report::KPI_KEYS`], the funnel stages of
/// [`crm_domain::report::Report::funnel`], and the titles the renderers print (`report`,
/// `period_daily`, `kpis`, `chart_funnel`, …). Serbian labels are Cyrillic, Bosnian ones
/// Latin.
pub fn label(key: &str, language: &str) -> &'static str {
    try_label(key, language).unwrap_or(UNKNOWN_LABEL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_domain::report::KPI_KEYS;

    #[test]
    fn every_kpi_and_funnel_key_has_a_label_in_every_language() {
        let funnel = [
            "leads_in",
            "qualified",
            "customers_called",
            "calls_connected",
            "appointments",
            "converted",
        ];
        for key in KPI_KEYS.iter().chain(funnel.iter()) {
            for language in LANGUAGES {
                let text = try_label(key, language);
                assert!(text.is_some_and(|t| !t.is_empty()), "{key} in {language}");
            }
        }
    }

    #[test]
    fn languages_pick_their_scripts_and_unknown_ones_read_english() {
        assert_eq!(label("report", "en"), "Report");
        assert_eq!(label("report", "de"), "Bericht");
        assert_eq!(label("report", "de-AT"), "Bericht");
        assert_eq!(label("report", "bs"), "Izvještaj");
        assert_eq!(label("report", "sr"), "Извештај");
        assert_eq!(label("report", "fr"), "Report");
        assert_eq!(label("no_such_key", "de"), UNKNOWN_LABEL);
        assert_eq!(try_label("no_such_key", "de"), None);
        // Every Serbian label is Cyrillic: no Latin letters at all.
        for (key, texts) in LABELS {
            assert!(
                !texts[3].chars().any(|c| c.is_ascii_alphabetic()),
                "sr label of {key} is not Cyrillic: {}",
                texts[3]
            );
        }
        let keys: std::collections::HashSet<_> = LABELS.iter().map(|(k, _)| k).collect();
        assert_eq!(keys.len(), LABELS.len(), "a key is listed twice");
    }
}
