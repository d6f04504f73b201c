//! What identifies a condition: its kind and what it is about, never the numbers that
//! describe it at the moment (an age, a count, a time). A key built from text that carries
//! such numbers changes on every evaluation, and every evaluation then looks like a new
//! condition: one page per tick instead of one per incident.

/// `text` with every number that is not part of a name replaced by `#`: `blocked by RPO:
/// data 1h 10m old` and `... 1h 11m old` give the same text. Kept: anything between
/// backticks (kbha quotes names: `` `secondary` ``), and the digits of a word that starts
/// with a letter (`us-east-1`, `db2`, `node_3`, `s3://...`); a word runs over letters,
/// digits, `-` and `_`.
pub fn without_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut quoted = false;
    let mut in_word = false;
    let mut word_is_name = false;
    let mut in_number = false;
    for c in text.chars() {
        if c == '`' {
            quoted = !quoted;
        }
        let word_char = c.is_alphanumeric() || c == '-' || c == '_';
        if word_char && !in_word {
            word_is_name = c.is_alphabetic();
        }
        in_word = word_char;
        if !quoted && !word_is_name && c.is_ascii_digit() {
            if !in_number {
                out.push('#');
                in_number = true;
            }
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::without_numbers;

    #[test]
    fn ages_counts_and_times_do_not_count() {
        assert_eq!(without_numbers("blocked by RPO: data 1h 10m old"), "blocked by RPO: data #h #m old");
        assert_eq!(without_numbers("blocked by RPO: data 1h 10m old"), without_numbers("blocked by RPO: data 2h 0m old"));
        assert_eq!(without_numbers("3 of 12 targets down"), "# of # targets down");
        assert_eq!(without_numbers("since 2026-11-26T10:00:05Z"), "since #-#-#T#:#:#Z");
        assert_eq!(without_numbers("1.5 s, 50 %"), "#.# s, # %");
    }

    #[test]
    fn names_keep_their_digits() {
        for name in ["us-east-1", "eu-west-2", "db2", "node_3", "s3://policies/trap.wasm", "`replica 7`", "kbha-api-primary-unhealthy"] {
            assert_eq!(without_numbers(name), name);
        }
        assert_ne!(without_numbers("region eu-west-1 down"), without_numbers("region eu-west-2 down"));
        assert_ne!(without_numbers("failover to `node 1` blocked"), without_numbers("failover to `node 2` blocked"));
        assert_eq!(without_numbers("kbha: failover to `secondary` blocked by RPO"), "kbha: failover to `secondary` blocked by RPO");
    }
}
