//! `--format csv`, through the `csv` crate: a header line naming the columns — `user` and
//! `secret` (base32), and optionally `name`, `digits`, `period` and `algorithm` — in any order,
//! then one token a line. Commas, semicolons (a Swedish Excel's) or tabs, whichever the header
//! uses; a UTF-8 byte-order mark and `#` comment lines are skipped. Also the `--map` file
//! (`serial,user`) that gives PSKC tokens their users.

use std::collections::HashMap;

use super::{Entry, Imported, Options, Place, Refused, number, token};
use crate::otp::{Algorithm, TotpParams, totp};

const COLUMNS: [&str; 6] = ["user", "secret", "name", "digits", "period", "algorithm"];

/// Every row's entry; `Err` (naming the line) for a header that does not say what the columns
/// are.
pub fn read(text: &str, options: &Options<'_>) -> Result<Vec<Entry>, String> {
    let (mut reader, lines) = reader(text);
    let columns = Columns::of(&header(&mut reader)?)?;
    let mut entries = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => entries.push(Entry { place: lines.place(record.position()), read: columns.token(&record, options.default_name) }),
            Err(e) => entries.push(Entry { place: lines.place(e.position()), read: Err(Refused::new(None, describe(&e))) }),
        }
    }
    Ok(entries)
}

/// `--map`: the user of each PSKC token by its serial number, from a CSV file with a `serial`
/// and a `user` column. `Err` names the line of the first problem.
pub fn serials(text: &str) -> Result<HashMap<String, String>, String> {
    let (mut reader, lines) = reader(text);
    let header = header(&mut reader)?;
    let find = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(serial), Some(user)) = (find("serial"), find("user")) else {
        return Err("line 1: the header must name a serial and a user column".into());
    };
    let mut users = HashMap::new();
    let mut first_seen = HashMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| format!("{}: {}", lines.place(e.position()), describe(&e)))?;
        let line = lines.place(record.position());
        let (Some(serial), Some(user)) = (record.get(serial), record.get(user)) else { continue };
        if serial.is_empty() || user.is_empty() {
            return Err(format!("{line}: a serial and a user are needed"));
        }
        if let Some(earlier) = first_seen.insert(serial.to_owned(), line.clone()) {
            return Err(format!("{line}: serial {serial} is on {earlier} too"));
        }
        users.insert(serial.to_owned(), user.to_owned());
    }
    Ok(users)
}

/// A reader of `text` (its byte-order mark skipped), and where its lines are.
fn reader(text: &str) -> (csv::Reader<&[u8]>, Lines<'_>) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let header = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).unwrap_or_default();
    let delimiter = [b',', b';', b'\t'].into_iter().find(|d| header.as_bytes().contains(d)).unwrap_or(b',');
    let reader = csv::ReaderBuilder::new().delimiter(delimiter).trim(csv::Trim::All).comment(Some(b'#')).from_reader(text.as_bytes());
    (reader, Lines { text, ends: text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(at, _)| at).collect() })
}

/// The file's text and where each of its lines ends, to say which line a record is on.
struct Lines<'t> {
    text: &'t str,
    ends: Vec<usize>,
}

impl Lines<'_> {
    fn place(&self, position: Option<&csv::Position>) -> Place {
        let mut byte = position.map_or(0, |p| usize::try_from(p.byte()).unwrap_or(usize::MAX));
        // The crate places a record where the one before it ended (its own line count is off
        // too): past the blank and comment lines it skipped is where the record is.
        while let Some(rest) = self.text.get(byte..) {
            let end = rest.find('\n');
            let line = &rest[..end.unwrap_or(rest.len())];
            match end {
                Some(end) if line.trim_end_matches('\r').is_empty() || line.starts_with('#') => byte += end + 1,
                _ => break,
            }
        }
        Place::Line(self.ends.partition_point(|&end| end < byte) as u64 + 1)
    }
}

fn header(reader: &mut csv::Reader<&[u8]>) -> Result<csv::StringRecord, String> {
    let header = reader.headers().map_err(|e| format!("line 1: {}", describe(&e)))?.clone();
    if header.iter().all(str::is_empty) {
        return Err("the file is empty: a header line is needed".into());
    }
    Ok(header)
}

/// A CSV error in words, without the fields it was reading.
fn describe(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => format!("{len} fields where the header has {expected_len}"),
        csv::ErrorKind::Utf8 { .. } => "not UTF-8 text".into(),
        _ => "unreadable as CSV".into(),
    }
}

/// Where each column is.
struct Columns {
    user: usize,
    secret: usize,
    name: Option<usize>,
    digits: Option<usize>,
    period: Option<usize>,
    algorithm: Option<usize>,
}

impl Columns {
    fn of(header: &csv::StringRecord) -> Result<Self, String> {
        let mut at: HashMap<&str, usize> = HashMap::new();
        for (index, name) in header.iter().enumerate() {
            let known = COLUMNS.iter().find(|c| c.eq_ignore_ascii_case(name));
            let Some(&known) = known else {
                if super::may_be_a_seed(name) {
                    return Err(format!(
                        "line 1: column {} is not one of {} (is the header line missing? its value is not shown: it may be a seed)",
                        index + 1,
                        COLUMNS.join(", ")
                    ));
                }
                return Err(format!("line 1: unknown column {name:?} (the columns are {})", COLUMNS.join(", ")));
            };
            if at.insert(known, index).is_some() {
                return Err(format!("line 1: column {known} twice"));
            }
        }
        let required = |name: &str| at.get(name).copied().ok_or_else(|| format!("line 1: no {name} column (user and secret are needed)"));
        Ok(Self {
            user: required("user")?,
            secret: required("secret")?,
            name: at.get("name").copied(),
            digits: at.get("digits").copied(),
            period: at.get("period").copied(),
            algorithm: at.get("algorithm").copied(),
        })
    }

    fn token(&self, record: &csv::StringRecord, default_name: &str) -> Result<Imported, Refused> {
        let cell = |column: Option<usize>| column.and_then(|c| record.get(c)).filter(|v| !v.is_empty());
        let user = cell(Some(self.user)).unwrap_or_default();
        let refused = |reason: String| Refused::new(Some(user).filter(|u| !u.is_empty()), reason);
        let mut params = TotpParams::default();
        if let Some(digits) = cell(self.digits) {
            params.digits = number("digits", digits).map_err(refused)?;
        }
        if let Some(period) = cell(self.period) {
            params.period = number("period", period).map_err(refused)?;
        }
        if let Some(algorithm) = cell(self.algorithm) {
            params.algorithm = algorithm.parse::<Algorithm>().map_err(|_| refused("algorithm: SHA1, SHA256 or SHA512".into()))?;
        }
        let secret = cell(Some(self.secret)).ok_or_else(|| refused("no secret".into()))?;
        let secret = totp::from_base32(secret).map_err(|e| refused(format!("secret: {e}")))?;
        token(user, cell(self.name).unwrap_or_default(), default_name, params, secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    fn entries(text: &str) -> Result<Vec<Entry>, String> {
        read(text, &Options { default_name: "Authenticator", ..Options::default() })
    }

    #[test]
    fn columns_in_any_order_with_optional_parameters() {
        let text = format!(
            "\u{feff}Secret,User,digits,Name,period,algorithm\n\
             {SECRET_B32},alice,,Phone,,\n\
             # a comment\n\
             \n\
             \"gezd gnbv gy3t qojq gezd gnbv gy3t qojq====\", bob@example.test ,8,\"Old, VPN\",60,sha256\n"
        );
        let read = entries(&text).unwrap();
        assert_eq!(read.iter().map(|e| e.place.to_string()).collect::<Vec<_>>(), ["line 2", "line 5"]);
        let alice = read[0].read.as_ref().unwrap();
        assert_eq!((alice.user.as_str(), alice.name.as_str(), alice.params), ("alice", "Phone", TotpParams::default()));
        assert_eq!(alice.secret.expose(), b"12345678901234567890");
        let bob = read[1].read.as_ref().unwrap();
        assert_eq!((bob.user.as_str(), bob.name.as_str()), ("bob@example.test", "Old, VPN"));
        assert_eq!(bob.params, TotpParams { algorithm: Algorithm::Sha256, digits: 8, period: 60 });
        assert_eq!(bob.secret.expose(), b"12345678901234567890");
        // A Swedish Excel's semicolons, no name column: the default name.
        let semicolons = entries(&format!("user;secret\r\ncarol;{SECRET_B32}\r\n")).unwrap();
        let carol = semicolons[0].read.as_ref().unwrap();
        assert_eq!((carol.user.as_str(), carol.name.as_str()), ("carol", "Authenticator"));
    }

    #[test]
    fn a_header_that_does_not_say_what_the_columns_are_stops_the_file() {
        for (text, error) in [
            ("", "the file is empty: a header line is needed"),
            (
                "user,secret,pin\nalice,X,1\n",
                "line 1: unknown column \"pin\" (the columns are user, secret, name, digits, period, algorithm)",
            ),
            ("user,secret,User\n", "line 1: column user twice"),
            ("name,secret\n", "line 1: no user column (user and secret are needed)"),
            ("user,name\n", "line 1: no secret column (user and secret are needed)"),
        ] {
            assert_eq!(entries(text).unwrap_err(), error, "{text:?}");
        }
    }

    #[test]
    fn every_bad_row_is_refused_by_itself_and_never_with_its_secret() {
        let s = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
        let text = format!(
            "user,secret,digits,period,algorithm\n\
             ,{s},,,\n\
             dave,,,,\n\
             dave,JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PX1,,,\n\
             dave,{s},eight,,\n\
             dave,{s},,-30,\n\
             dave,{s},,,MD5\n\
             dave,{s},9,,\n\
             dave,JBSWY3DP,,,\n\
             dave,{s}\n\
             erin,{s},,,\n"
        );
        let entries = entries(&text).unwrap();
        let refusals: Vec<(String, Option<&str>, &str)> = entries
            .iter()
            .filter_map(|e| e.read.as_ref().err().map(|r| (e.place.to_string(), r.user.as_deref(), r.reason.as_str())))
            .collect();
        assert_eq!(
            refusals,
            [
                ("line 2".to_owned(), None, "no user"),
                ("line 3".to_owned(), Some("dave"), "no secret"),
                ("line 4".to_owned(), Some("dave"), "secret: not base32 (a character other than A-Z and 2-7)"),
                ("line 5".to_owned(), Some("dave"), "digits: not a number"),
                ("line 6".to_owned(), Some("dave"), "period: not a number"),
                ("line 7".to_owned(), Some("dave"), "algorithm: SHA1, SHA256 or SHA512"),
                ("line 8".to_owned(), Some("dave"), "digits must be 6, 7 or 8"),
                ("line 9".to_owned(), Some("dave"), "the secret is 5 bytes: too short (at least 10; 20 is usual)"),
                ("line 10".to_owned(), None, "2 fields where the header has 5"),
            ]
        );
        assert_eq!(entries.last().unwrap().read.as_ref().unwrap().user, "erin", "rows after bad ones are read");
        assert!(entries.iter().all(|e| !format!("{e:?}").contains(&s[..8])), "no secret in a refusal");
    }

    #[test]
    fn the_serial_map_names_each_serial_once() {
        let map = serials("Serial,User\n987654321, alice \n\n123, bob@example.test\n").unwrap();
        assert_eq!(map.get("987654321").map(String::as_str), Some("alice"));
        assert_eq!(map.len(), 2);
        assert_eq!(serials("serial,user\n1,a\n1,b\n").unwrap_err(), "line 3: serial 1 is on line 2 too");
        assert_eq!(serials("serial,name\n").unwrap_err(), "line 1: the header must name a serial and a user column");
        assert_eq!(serials("serial,user\n1,\n").unwrap_err(), "line 2: a serial and a user are needed");
        assert_eq!(serials("serial,user\n1,a,x\n").unwrap_err(), "line 2: 3 fields where the header has 2");
    }

    #[test]
    fn a_missing_header_does_not_print_the_seed_it_took_for_a_column() {
        let text = format!("{SECRET_B32},alice\n");
        let err = entries(&text).unwrap_err();
        assert!(!err.contains(&SECRET_B32[..8]) && err.contains("column 1") && err.contains("header line missing"), "{err}");
        assert!(crate::import::may_be_a_seed(SECRET_B32) && crate::import::may_be_a_seed("gezd gnbv gy3t qojq"));
        assert!(!crate::import::may_be_a_seed("alice") && !crate::import::may_be_a_seed("alice.andersson@example.test"));
        for seed in ["3132333435363738393031323334353637383930", "MTIzNDU2Nzg5MDEyMzQ1Njc4OTA="] {
            assert!(crate::import::may_be_a_seed(seed), "hex and base64 too: {seed}");
            assert!(!entries(&format!("{seed},alice\n")).unwrap_err().contains(&seed[..10]));
        }
    }
}
