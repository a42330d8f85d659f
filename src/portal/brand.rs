//! The organisation's look on every portal page: `[portal] title`, `help_text` (the help
//! desk's number, say), each one text or one per language, a `logo_file` read once at start
//! and served from memory, and an `accent_color` served as a small stylesheet (the pages'
//! Content-Security-Policy allows no inline style).

use std::path::Path;

use serde::Deserialize;

use super::i18n::Lang;
use crate::settings::Invalid;

/// A text given once for every language, or per language.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Localized {
    Same(String),
    PerLanguage { en: String, sv: String },
}

impl Localized {
    fn get(&self, lang: Lang) -> &str {
        match (self, lang) {
            (Self::Same(text), _) => text,
            (Self::PerLanguage { en, .. }, Lang::En) => en,
            (Self::PerLanguage { sv, .. }, Lang::Sv) => sv,
        }
    }

    fn check(&self, key: &str, max_chars: usize) -> Result<(), Invalid> {
        let texts: Vec<&str> = match self {
            Self::Same(text) => vec![text],
            Self::PerLanguage { en, sv } => vec![en, sv],
        };
        for text in texts {
            if text.trim().is_empty() {
                return Err(Invalid::new(key, "must not be empty (leave the key out for the default)"));
            }
            if text.chars().count() > max_chars {
                return Err(Invalid::new(key, format!("at most {max_chars} characters")));
            }
            if text.chars().any(|c| c.is_control() && c != '\n') {
                return Err(Invalid::new(key, "holds control characters"));
            }
        }
        Ok(())
    }
}

/// A logo, in memory.
#[derive(Debug, Clone)]
pub struct Logo {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
}

/// What every page shows of the organisation.
#[derive(Debug, Clone, Default)]
pub struct Brand {
    title: Option<Localized>,
    help_text: Option<Localized>,
    pub logo: Option<Logo>,
    /// `:root { --accent: ... }` when an accent colour is set.
    pub stylesheet: Option<String>,
}

/// The largest logo: a header image, not a photograph.
const MAX_LOGO_BYTES: u64 = 512 * 1024;

impl Brand {
    /// Checked; `logo_file` read now (a regular file, at most 512 KiB, PNG, JPEG, GIF, WebP or
    /// SVG by its content). Errors name the key.
    pub fn build(
        title: Option<Localized>,
        help_text: Option<Localized>,
        logo_file: Option<&Path>,
        accent_color: Option<&str>,
    ) -> Result<Self, Invalid> {
        if let Some(title) = &title {
            title.check("title", 80)?;
        }
        if let Some(help) = &help_text {
            help.check("help_text", 500)?;
        }
        let logo = match logo_file {
            Some(path) => Some(read_logo(path).map_err(|m| Invalid::new("logo_file", format!("{}: {m}", path.display())))?),
            None => None,
        };
        let stylesheet = match accent_color {
            Some(color) if is_hex_color(color) => Some(format!(":root {{ --accent: {color}; }}\n")),
            Some(color) => {
                let shown: String = color.chars().take(20).collect();
                return Err(Invalid::new("accent_color", format!("{shown:?} is not a colour such as \"#0b4f6c\" or \"#07c\"")));
            }
            None => None,
        };
        Ok(Self { title, help_text, logo, stylesheet })
    }

    /// The title in `lang`, or radmfa's own.
    pub fn title<'a>(&'a self, lang: Lang, default: &'a str) -> &'a str {
        self.title.as_ref().map_or(default, |t| t.get(lang))
    }

    pub fn help_text(&self, lang: Lang) -> Option<&str> {
        self.help_text.as_ref().map(|t| t.get(lang))
    }
}

fn is_hex_color(text: &str) -> bool {
    text.strip_prefix('#').is_some_and(|hex| matches!(hex.len(), 3 | 6) && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

fn read_logo(path: &Path) -> Result<Logo, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path).map_err(|e| e.to_string())?.take(MAX_LOGO_BYTES + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_LOGO_BYTES {
        return Err(format!("larger than {} KiB", MAX_LOGO_BYTES / 1024));
    }
    let content_type = image_type(&bytes).ok_or("not a PNG, JPEG, GIF, WebP or SVG image")?;
    Ok(Logo { bytes, content_type })
}

/// The image type by its first bytes (never by the file's name).
fn image_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        let head = String::from_utf8_lossy(&bytes[..bytes.len().min(1024)]).to_ascii_lowercase();
        let head = head.trim_start_matches('\u{feff}').trim_start();
        (head.starts_with("<svg") || (head.starts_with("<?xml") && head.contains("<svg"))).then_some("image/svg+xml")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_per_language_or_one_for_both() {
        let brand = Brand::build(
            Some(Localized::PerLanguage { en: "Region Example MFA".into(), sv: "Region Exempel MFA".into() }),
            Some(Localized::Same("Help desk: 010-123 45 67".into())),
            None,
            Some("#07c"),
        )
        .unwrap();
        assert_eq!(brand.title(Lang::Sv, "radmfa"), "Region Exempel MFA");
        assert_eq!(brand.title(Lang::En, "radmfa"), "Region Example MFA");
        assert_eq!(brand.help_text(Lang::Sv), Some("Help desk: 010-123 45 67"));
        assert_eq!(brand.stylesheet.as_deref(), Some(":root { --accent: #07c; }\n"));
        assert_eq!(Brand::default().title(Lang::En, "radmfa"), "radmfa");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = |r: Result<Brand, Invalid>| r.unwrap_err().key;
        assert_eq!(err(Brand::build(None, None, None, Some("red; } body { display: none"))), "accent_color");
        assert_eq!(err(Brand::build(Some(Localized::Same(" ".into())), None, None, None)), "title");
        assert_eq!(err(Brand::build(None, Some(Localized::Same("x".repeat(501))), None, None)), "help_text");
        assert_eq!(err(Brand::build(None, None, Some(Path::new("/dev/zero")), None)), "logo_file");
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("logo.png");
        std::fs::write(&text, "not an image").unwrap();
        assert_eq!(err(Brand::build(None, None, Some(&text), None)), "logo_file");
    }

    #[test]
    fn the_logo_type_comes_from_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("logo.bin");
        std::fs::write(&svg, "<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"/>").unwrap();
        let brand = Brand::build(None, None, Some(&svg), None).unwrap();
        assert_eq!(brand.logo.unwrap().content_type, "image/svg+xml");
        assert_eq!(image_type(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
    }
}
