//! Fuzzy duplicate detection: how alike two people's names and companies are, with the reasons.
//! Names are compared as sorted tokens (so "Müller, Jürgen" matches "Jürgen Mueller"), folded to
//! ASCII (umlauts both ways: ü → u and ue → u), Serbian Cyrillic transliterated to Latin (so
//! "Иван Петровић" matches "Ivan Petrović"), with Jaro-Winkler similarity.

/// Jaro-Winkler similarity of two strings, 0.0 (nothing alike) to 1.0 (equal).
pub fn jaro_winkler(a: &str, b: &str) -> f64 {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let window = (a.len().max(b.len()) / 2).saturating_sub(1);
    let mut a_matched = vec![false; a.len()];
    let mut b_matched = vec![false; b.len()];
    let mut matches = 0usize;
    for (i, ca) in a.iter().enumerate() {
        let start = i.saturating_sub(window);
        let end = (i + window + 1).min(b.len());
        for j in start..end {
            if !b_matched[j] && b[j] == *ca {
                a_matched[i] = true;
                b_matched[j] = true;
                matches += 1;
                break;
            }
        }
    }
    if matches == 0 {
        return 0.0;
    }
    let a_seq = a
        .iter()
        .zip(&a_matched)
        .filter(|(_, m)| **m)
        .map(|(c, _)| c);
    let b_seq = b
        .iter()
        .zip(&b_matched)
        .filter(|(_, m)| **m)
        .map(|(c, _)| c);
    let transpositions = a_seq.zip(b_seq).filter(|(x, y)| x != y).count() / 2;
    let m = matches as f64;
    let jaro = (m / a.len() as f64 + m / b.len() as f64 + (m - transpositions as f64) / m) / 3.0;
    let prefix = a.iter().zip(&b).take(4).take_while(|(x, y)| x == y).count();
    jaro + prefix as f64 * 0.1 * (1.0 - jaro)
}

/// A name or company in comparable form: lower case, transliterated and folded to ASCII
/// letters and digits, tokens sorted and joined by one space; legal forms (GmbH, d.o.o., AG …)
/// dropped from companies by [`normalize_company`].
pub fn normalize_name(raw: &str) -> String {
    let mut folded = String::with_capacity(raw.len());
    for c in raw.chars().flat_map(char::to_lowercase) {
        match c {
            'ä' | 'á' | 'à' | 'â' | 'ã' | 'å' | 'а' => folded.push('a'),
            'ö' | 'ó' | 'ò' | 'ô' | 'õ' | 'ø' | 'о' => folded.push('o'),
            'ü' | 'ú' | 'ù' | 'û' | 'у' => folded.push('u'),
            'é' | 'è' | 'ê' | 'ë' | 'е' => folded.push('e'),
            'í' | 'ì' | 'î' | 'ï' | 'и' => folded.push('i'),
            'ß' => folded.push_str("ss"),
            'š' | 'ш' => folded.push('s'),
            'č' | 'ć' | 'ч' | 'ћ' => folded.push('c'),
            'ž' | 'ж' => folded.push('z'),
            'đ' | 'ђ' => folded.push('d'),
            'б' => folded.push('b'),
            'в' => folded.push('v'),
            'г' => folded.push('g'),
            'д' => folded.push('d'),
            'з' => folded.push('z'),
            'ј' => folded.push('j'),
            'к' => folded.push('k'),
            'л' => folded.push('l'),
            'љ' => folded.push_str("lj"),
            'м' => folded.push('m'),
            'н' => folded.push('n'),
            'њ' => folded.push_str("nj"),
            'п' => folded.push('p'),
            'р' => folded.push('r'),
            'с' => folded.push('s'),
            'т' => folded.push('t'),
            'ф' => folded.push('f'),
            'х' => folded.push('h'),
            'ц' => folded.push('c'),
            'џ' => folded.push_str("dz"),
            c if c.is_ascii_alphanumeric() => folded.push(c),
            _ => folded.push(' '),
        }
    }
    // German transcriptions: "mueller" and "müller" are the same name.
    let mut tokens: Vec<String> = folded
        .split_whitespace()
        .map(|t| t.replace("ae", "a").replace("oe", "o").replace("ue", "u"))
        .collect();
    tokens.sort();
    tokens.join(" ")
}

/// Legal forms that say nothing about which company it is.
const LEGAL_FORMS: &[&str] = &[
    "gmbh",
    "ag",
    "kg",
    "ohg",
    "ug",
    "gbr",
    "ev",
    "co",
    "doo",
    "dd",
    "ad",
    "sp",
    "szr",
    "ltd",
    "inc",
    "llc",
    "plc",
    "sa",
    "sarl",
    "bv",
    "nv",
    "mbh",
    "haftungsbeschrankt",
];

/// A company in comparable form (see [`normalize_name`]), without its legal form.
pub fn normalize_company(raw: &str) -> String {
    normalize_name(&raw.replace('.', ""))
        .split(' ')
        .filter(|t| !t.is_empty() && !LEGAL_FORMS.contains(t))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaro_winkler_matches_the_reference_values() {
        let close = |a: f64, b: f64| (a - b).abs() < 0.001;
        assert!(close(jaro_winkler("martha", "marhta"), 0.961));
        assert!(close(jaro_winkler("dwayne", "duane"), 0.84));
        assert!(close(jaro_winkler("dixon", "dicksonx"), 0.813));
        assert_eq!(jaro_winkler("", ""), 1.0);
        assert_eq!(jaro_winkler("abc", ""), 0.0);
        assert_eq!(jaro_winkler("abc", "xyz"), 0.0);
    }

    #[test]
    fn names_are_normalized_across_scripts_and_spellings() {
        assert_eq!(
            normalize_name("Müller, Jürgen"),
            normalize_name("Jürgen Mueller")
        );
        assert_eq!(
            normalize_name("Иван Петровић"),
            normalize_name("Ivan Petrović")
        );
        assert_eq!(normalize_name("  ANA   hodžić "), "ana hodzic");
        assert_eq!(
            normalize_company("Müller GmbH"),
            normalize_company("Mueller")
        );
        assert_eq!(normalize_company("Firma d.o.o."), "firma");
    }
}
