//! Mail subjects and bodies from templates: built-in defaults (assets/mail/), each
//! replaceable by a file of the same name in `mail_templates_dir`. HTML is autoescaped.

use std::collections::HashMap;
use std::path::Path;

use minijinja::Environment;
use serde::Serialize;

/// The templates, each as `NAME.subject`, `NAME.txt` and `NAME.html`.
pub const NAMES: [&str; 10] = [
    "confirmation",
    "magic_link",
    "recovery",
    "email_change",
    "email_change_current",
    "email_change_notice",
    "email_in_use",
    "invitation",
    "reauthentication",
    "invite_user",
];

const PARTS: [&str; 3] = ["subject", "txt", "html"];

fn builtin(file: &str) -> Option<&'static str> {
    Some(match file {
        "confirmation.subject" => include_str!("../../assets/mail/confirmation.subject"),
        "confirmation.txt" => include_str!("../../assets/mail/confirmation.txt"),
        "confirmation.html" => include_str!("../../assets/mail/confirmation.html"),
        "magic_link.subject" => include_str!("../../assets/mail/magic_link.subject"),
        "magic_link.txt" => include_str!("../../assets/mail/magic_link.txt"),
        "magic_link.html" => include_str!("../../assets/mail/magic_link.html"),
        "recovery.subject" => include_str!("../../assets/mail/recovery.subject"),
        "recovery.txt" => include_str!("../../assets/mail/recovery.txt"),
        "recovery.html" => include_str!("../../assets/mail/recovery.html"),
        "email_change.subject" => include_str!("../../assets/mail/email_change.subject"),
        "email_change.txt" => include_str!("../../assets/mail/email_change.txt"),
        "email_change.html" => include_str!("../../assets/mail/email_change.html"),
        "email_change_current.subject" => {
            include_str!("../../assets/mail/email_change_current.subject")
        }
        "email_change_current.txt" => include_str!("../../assets/mail/email_change_current.txt"),
        "email_change_current.html" => include_str!("../../assets/mail/email_change_current.html"),
        "email_change_notice.subject" => {
            include_str!("../../assets/mail/email_change_notice.subject")
        }
        "email_change_notice.txt" => include_str!("../../assets/mail/email_change_notice.txt"),
        "email_change_notice.html" => include_str!("../../assets/mail/email_change_notice.html"),
        "email_in_use.subject" => include_str!("../../assets/mail/email_in_use.subject"),
        "email_in_use.txt" => include_str!("../../assets/mail/email_in_use.txt"),
        "email_in_use.html" => include_str!("../../assets/mail/email_in_use.html"),
        "invitation.subject" => include_str!("../../assets/mail/invitation.subject"),
        "invitation.txt" => include_str!("../../assets/mail/invitation.txt"),
        "invitation.html" => include_str!("../../assets/mail/invitation.html"),
        "reauthentication.subject" => include_str!("../../assets/mail/reauthentication.subject"),
        "reauthentication.txt" => include_str!("../../assets/mail/reauthentication.txt"),
        "reauthentication.html" => include_str!("../../assets/mail/reauthentication.html"),
        "invite_user.subject" => include_str!("../../assets/mail/invite_user.subject"),
        "invite_user.txt" => include_str!("../../assets/mail/invite_user.txt"),
        "invite_user.html" => include_str!("../../assets/mail/invite_user.html"),
        _ => return None,
    })
}

/// What a template may use.
#[derive(Serialize)]
pub struct MailContext {
    /// The link to follow (`…/auth/v1/verify?token=…&type=…&redirect_to=…`).
    pub confirmation_url: String,
    /// The six-digit code.
    pub token: String,
    /// The link token, for apps that build their own link (`verifyOtp({ token_hash })`).
    pub token_hash: String,
    /// The user's (current) address.
    pub email: String,
    /// The new address of an email change.
    pub new_email: Option<String>,
    /// The site URL.
    pub site_url: String,
    /// Where the link lands after verification.
    pub redirect_to: String,
    /// Minutes until the link and code expire.
    pub expires_in_minutes: i64,
    /// When the request that sent this mail was made (RFC 3339, UTC).
    pub requested_at: String,
}

/// What the `invitation` template may use.
#[derive(Serialize)]
pub struct InvitationContext {
    /// The dashboard's accept page, with the single-use token in its fragment.
    pub accept_url: String,
    /// The invited address.
    pub email: String,
    /// The organization's name.
    pub org_name: String,
    /// Who invited.
    pub inviter_email: String,
    /// The role offered.
    pub role: String,
    /// When the invitation expires (RFC 3339).
    pub expires_at: String,
    /// Hours until it expires.
    pub expires_in_hours: i64,
    /// The site URL.
    pub site_url: String,
}

/// A rendered mail.
pub struct Rendered {
    /// One line.
    pub subject: String,
    /// Plain text.
    pub text: String,
    /// HTML.
    pub html: String,
}

/// The template sources, loaded and checked at start.
pub struct Templates {
    sources: HashMap<String, String>,
    env: Environment<'static>,
}

impl Templates {
    /// The built-in templates, each replaced by `dir/FILE` when that file exists.
    pub fn load(dir: Option<&str>) -> anyhow::Result<Self> {
        let mut sources = HashMap::new();
        for name in NAMES {
            for part in PARTS {
                let file = format!("{name}.{part}");
                let over = dir.map(|d| Path::new(d).join(&file));
                let source = match over.filter(|p| p.is_file()) {
                    Some(p) => std::fs::read_to_string(&p)
                        .map_err(|e| anyhow::anyhow!("mail template {}: {e}", p.display()))?,
                    None => builtin(&file)
                        .ok_or_else(|| anyhow::anyhow!("no built-in template {file}"))?
                        .to_string(),
                };
                sources.insert(file, source);
            }
        }
        if let Some(d) = dir {
            if !Path::new(d).is_dir() {
                anyhow::bail!("mail_templates_dir {d} is not a folder");
            }
        }
        let t = Templates {
            sources,
            env: Environment::new(),
        };
        let sample = MailContext {
            confirmation_url: "https://example.com/auth/v1/verify?token=t&type=signup".into(),
            token: "123456".into(),
            token_hash: "t".into(),
            email: "someone@example.com".into(),
            new_email: Some("new@example.com".into()),
            site_url: "https://example.com".into(),
            redirect_to: "https://example.com".into(),
            expires_in_minutes: 60,
            requested_at: "2026-01-02T03:04:05Z".into(),
        };
        let invitation = InvitationContext {
            accept_url: "https://example.com/dashboard/#invitation=t".into(),
            email: "someone@example.com".into(),
            org_name: "Acme".into(),
            inviter_email: "owner@example.com".into(),
            role: "member".into(),
            expires_at: "2030-01-01T00:00:00Z".into(),
            expires_in_hours: 48,
            site_url: "https://example.com".into(),
        };
        t.render("invitation", &invitation)
            .map_err(|e| anyhow::anyhow!("mail template invitation: {e}"))?;
        for name in NAMES.into_iter().filter(|n| *n != "invitation") {
            t.render(name, &sample)
                .map_err(|e| anyhow::anyhow!("mail template {name}: {e}"))?;
        }
        Ok(t)
    }

    /// Renders one mail; the `.html` part is autoescaped (by its file name).
    pub fn render<C: Serialize>(&self, name: &str, ctx: &C) -> Result<Rendered, minijinja::Error> {
        let part = |p: &str| -> Result<String, minijinja::Error> {
            let file = format!("{name}.{p}");
            let source = self.sources.get(&file).map(String::as_str).unwrap_or("");
            self.env.render_named_str(&file, source, ctx)
        };
        let subject = part("subject")?
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Rendered {
            subject,
            text: part("txt")?,
            html: part("html")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(email: &str) -> MailContext {
        MailContext {
            confirmation_url: "https://auth.example.com/auth/v1/verify?token=abc&type=magiclink"
                .into(),
            token: "012345".into(),
            token_hash: "abc".into(),
            email: email.into(),
            new_email: None,
            site_url: "https://example.com".into(),
            redirect_to: "https://example.com".into(),
            expires_in_minutes: 60,
            requested_at: "2026-01-02T03:04:05Z".into(),
        }
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let t = Templates::load(None).unwrap_or_else(|e| panic!("{e}"));
        let r = t
            .render("magic_link", &ctx("<b>x</b>@example.com"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.subject, "Your sign-in link");
        assert!(r.html.contains("&lt;b&gt;x&lt;&#x2f;b&gt;") || r.html.contains("&lt;b&gt;"));
        assert!(!r.html.contains("<b>x</b>"));
        assert!(r.text.contains("<b>x</b>@example.com"));
        assert!(r.text.contains("012345"));
    }

    #[test]
    fn the_invitation_names_the_organization_the_inviter_the_role_and_the_link() {
        let t = Templates::load(None).unwrap_or_else(|e| panic!("{e}"));
        let ctx = InvitationContext {
            accept_url: "https://auth.example.com/dashboard/#invitation=inv_1&token=abc".into(),
            email: "sam@example.com".into(),
            org_name: "<Acme>".into(),
            inviter_email: "ann@example.com".into(),
            role: "admin".into(),
            expires_at: "2030-01-03T00:00:00Z".into(),
            expires_in_hours: 48,
            site_url: "https://example.com".into(),
        };
        let r = t
            .render("invitation", &ctx)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.subject, "ann@example.com invited you to <Acme>");
        for part in [&r.text, &r.html] {
            assert!(part.contains("as admin") || part.contains("as <strong>admin</strong>"));
            assert!(part.contains("2030-01-03T00:00:00Z") && part.contains("48 hours"));
        }
        assert!(r.text.contains(&ctx.accept_url));
        assert!(r.html.contains("&lt;Acme&gt;") && !r.html.contains("<Acme>"));
    }

    #[test]
    fn a_file_in_the_folder_replaces_the_builtin() {
        let dir = std::env::temp_dir().join(format!("gh-tpl-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("recovery.subject"), "Reset for {{ email }}\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let t = Templates::load(dir.to_str()).unwrap_or_else(|e| panic!("{e}"));
        let r = t
            .render("recovery", &ctx("a@example.com"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.subject, "Reset for a@example.com");
        std::fs::write(dir.join("recovery.txt"), "{% if %}").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            Templates::load(dir.to_str()).is_err(),
            "a broken template stops the start"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
