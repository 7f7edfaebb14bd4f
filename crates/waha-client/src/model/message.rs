//! The message calls this project needs: send a text, mark as seen, typing indicators.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The body of `POST /api/sendText`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TextMessage {
    /// The session that sends.
    pub session: String,
    /// The chat, e.g. `5511999999999@c.us`.
    #[serde(rename = "chatId")]
    pub chat_id: String,
    /// The text.
    pub text: String,
    /// The id of the message this one replies to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

impl TextMessage {
    /// A text to `chat_id` from `session`.
    pub fn new(
        session: impl Into<String>,
        chat_id: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        Self {
            session: session.into(),
            chat_id: chat_id.into(),
            text: text.into(),
            reply_to: None,
        }
    }
}

/// The body of `POST /api/sendSeen`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeenReceipt {
    /// The session.
    pub session: String,
    /// The chat whose messages are marked as seen.
    pub chat_id: String,
    /// NOWEB: the message to mark.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// NOWEB, groups: who sent that message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant: Option<String>,
}

impl SeenReceipt {
    /// Mark the chat as seen.
    pub fn new(session: impl Into<String>, chat_id: impl Into<String>) -> Self {
        Self {
            session: session.into(),
            chat_id: chat_id.into(),
            message_id: None,
            participant: None,
        }
    }
}

/// A session and a chat: the body of `POST /api/startTyping` and `/api/stopTyping`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatRef {
    /// The session.
    pub session: String,
    /// The chat.
    pub chat_id: String,
}

impl ChatRef {
    /// That chat of that session.
    pub fn new(session: impl Into<String>, chat_id: impl Into<String>) -> Self {
        Self {
            session: session.into(),
            chat_id: chat_id.into(),
        }
    }
}

/// The answer to `sendText`: the message WAHA created.
///
/// Its shape depends on the engine (WEBJS answers a message with `id` as a string or an object
/// with `_serialized`; NOWEB answers the raw protocol message with `key.id`), so the whole body
/// is kept in `raw` and the id is picked from whichever form is present.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "Value", into = "Value")]
pub struct SentMessage {
    /// The message id, when the answer carries one.
    pub id: Option<String>,
    /// The body as received.
    pub raw: Value,
}

impl SentMessage {
    /// The message id from any of the engines' forms.
    fn id_of(raw: &Value) -> Option<String> {
        let id = raw.get("id");
        id.and_then(Value::as_str)
            .or_else(|| {
                id.and_then(|id| id.get("_serialized"))
                    .and_then(Value::as_str)
            })
            .or_else(|| id.and_then(|id| id.get("id")).and_then(Value::as_str))
            .or_else(|| raw.pointer("/key/id").and_then(Value::as_str))
            .map(str::to_owned)
    }
}

impl From<Value> for SentMessage {
    fn from(raw: Value) -> Self {
        Self {
            id: Self::id_of(&raw),
            raw,
        }
    }
}

impl From<SentMessage> for Value {
    fn from(message: SentMessage) -> Self {
        message.raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_message_id_from_every_engine_form() {
        let forms = [
            r#"{"id":"false_1@c.us_AAA","body":"hi"}"#,
            r#"{"id":{"fromMe":true,"id":"AAA","_serialized":"true_1@c.us_AAA"}}"#,
            r#"{"key":{"remoteJid":"1@s.whatsapp.net","fromMe":true,"id":"BAE5"},"message":{}}"#,
        ];
        let ids: Vec<_> = forms
            .iter()
            .map(|body| serde_json::from_str::<SentMessage>(body).unwrap().id)
            .collect();
        assert_eq!(
            ids,
            [
                Some("false_1@c.us_AAA".to_owned()),
                Some("true_1@c.us_AAA".to_owned()),
                Some("BAE5".to_owned())
            ]
        );
        assert_eq!(serde_json::from_str::<SentMessage>("{}").unwrap().id, None);
    }
}
