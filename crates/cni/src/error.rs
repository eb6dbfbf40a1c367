//! CNI errors: the spec's error object (CNI 1.0.0 SPEC.md, "Error"), printed on stdout
//! with a non-zero exit status.

use serde::Serialize;

/// Well-known error codes (CNI 1.0.0 SPEC.md, "Well-known Error Codes"); 100+ are ours.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration. Unused: unknown keys are ignored
    /// (the runtime adds its own, and the IPAM plugin reads the same configuration).
    #[allow(dead_code)]
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE_FAILURE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later (here: the ringswitch daemon is not reachable).
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// CNI 1.1.0 STATUS: the plugin is not available (cannot take ADDs).
    pub const NOT_AVAILABLE: u32 = 50;
    /// Ours: creating or configuring the veth pair failed.
    pub const LINK_FAILED: u32 = 100;
    /// Ours: the daemon refused the request.
    pub const DAEMON_REFUSED: u32 = 101;
    /// Ours: CHECK found the attachment not as ADD left it.
    pub const CHECK_FAILED: u32 = 102;
}

/// One CNI error: `{cniVersion, code, msg, details}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", .details.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: Option<String>,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = Some(details.into());
        self
    }

    /// The error object for stdout, in the version of the request (the spec's output
    /// must be in the configuration's version; before the config is read, ours).
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            details: Option<&'a str>,
        }
        serde_json::to_string(&Wire {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: self.details.as_deref(),
        })
        .unwrap_or_else(|_| {
            format!(
                "{{\"cniVersion\":\"{cni_version}\",\"code\":{},\"msg\":\"error\"}}",
                self.code
            )
        })
    }
}

pub type Result<T> = std::result::Result<T, CniError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_the_spec_fields() {
        let e = CniError::new(code::INVALID_CONFIG, "bad \"mtu\"").with_details("mtu=1");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.0.0")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion":"1.0.0","code":7,"msg":"bad \"mtu\"","details":"mtu=1"})
        );
        let v: serde_json::Value =
            serde_json::from_str(&CniError::new(11, "later").to_json("1.0.0")).unwrap();
        assert!(v.get("details").is_none(), "{v}");
        assert_eq!(e.to_string(), "bad \"mtu\": mtu=1");
    }
}
