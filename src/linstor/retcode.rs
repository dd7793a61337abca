//! LINSTOR's `ApiCallRc` replies: the signed return-code bit masks and the list wrapper that every mutating call returns.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Both type bits set: the entry is an error.
pub const MASK_ERROR: i64 = 0xC000_0000_0000_0000_u64 as i64;
/// Top bit only: the entry is a warning.
pub const MASK_WARN: i64 = 0x8000_0000_0000_0000_u64 as i64;
/// Second bit only: the entry is informational.
pub const MASK_INFO: i64 = 0x4000_0000_0000_0000;
/// The two type bits.
pub const MASK_BITS_TYPE: i64 = MASK_ERROR;
/// The operation bits.
pub const MASK_BITS_OP: i64 = 0x0300_0000;
/// The object bits.
pub const MASK_BITS_OBJ: i64 = 0x007C_0000;
/// The code bits.
pub const MASK_BITS_CODE: i64 = 0x7FFF;

/// Operation: create.
pub const MASK_CRT: i64 = 0x0100_0000;
/// Operation: modify.
pub const MASK_MOD: i64 = 0x0200_0000;
/// Operation: delete.
pub const MASK_DEL: i64 = 0x0300_0000;

/// Object: resource group.
pub const MASK_RSC_GRP: i64 = 0x0044_0000;
/// Object: node.
pub const MASK_NODE: i64 = 0x003C_0000;
/// Object: resource definition.
pub const MASK_RSC_DFN: i64 = 0x0038_0000;
/// Object: resource.
pub const MASK_RSC: i64 = 0x0034_0000;
/// Object: volume definition.
pub const MASK_VLM_DFN: i64 = 0x0030_0000;
/// Object: storage pool.
pub const MASK_STOR_POOL: i64 = 0x0014_0000;
/// Object: snapshot.
pub const MASK_SNAPSHOT: i64 = 0x000C_0000;

/// Success code: created.
pub const CREATED: u32 = 1;
/// Success code: deleted.
pub const DELETED: u32 = 2;
/// Success code: modified.
pub const MODIFIED: u32 = 3;

/// The volume size is not acceptable.
pub const FAIL_INVLD_VLM_SIZE: u32 = 206;
/// The place count is not acceptable.
pub const FAIL_INVLD_PLACE_COUNT: u32 = 219;
/// The request body is not acceptable.
pub const FAIL_INVLD_REQUEST: u32 = 234;
/// No such node.
pub const FAIL_NOT_FOUND_NODE: u32 = 300;
/// No such resource definition.
pub const FAIL_NOT_FOUND_RSC_DFN: u32 = 301;
/// No such resource.
pub const FAIL_NOT_FOUND_RSC: u32 = 302;
/// No such volume definition.
pub const FAIL_NOT_FOUND_VLM_DFN: u32 = 303;
/// No such storage pool.
pub const FAIL_NOT_FOUND_STOR_POOL: u32 = 310;
/// No such snapshot.
pub const FAIL_NOT_FOUND_SNAPSHOT: u32 = 315;
/// No such resource group.
pub const FAIL_NOT_FOUND_RSC_GRP: u32 = 317;
/// First access-denied code.
pub const FAIL_ACC_DENIED_FIRST: u32 = 400;
/// Last access-denied code.
pub const FAIL_ACC_DENIED_LAST: u32 = 499;
/// The resource definition exists.
pub const FAIL_EXISTS_RSC_DFN: u32 = 501;
/// The resource exists.
pub const FAIL_EXISTS_RSC: u32 = 502;
/// The volume definition exists.
pub const FAIL_EXISTS_VLM_DFN: u32 = 503;
/// The resource group exists.
pub const FAIL_EXISTS_RSC_GRP: u32 = 522;
/// The snapshot definition exists.
pub const FAIL_EXISTS_SNAPSHOT_DFN: u32 = 514;
/// The snapshot exists.
pub const FAIL_EXISTS_SNAPSHOT: u32 = 516;
/// A storage pool lacks the space asked for.
pub const FAIL_NOT_ENOUGH_FREE_SPACE: u32 = 980;
/// A satellite is not connected.
pub const FAIL_NOT_CONNECTED: u32 = 995;
/// The autoplacer found fewer candidates than needed.
pub const FAIL_NOT_ENOUGH_NODES: u32 = 996;
/// The resource is in use.
pub const FAIL_IN_USE: u32 = 997;
/// An unexpected controller failure, usually with an error report.
pub const FAIL_UNKNOWN_ERROR: u32 = 998;
/// A satellite is not connected (warning).
pub const WARN_NOT_CONNECTED: u32 = 1002;
/// Autoplace found the resource already at its place count.
pub const WARN_RSC_ALREADY_DEPLOYED: u32 = 1006;
/// The resource already has a disk on that node.
pub const WARN_RSC_ALREADY_HAS_DISK: u32 = 1007;
/// The resource is already diskless on that node.
pub const WARN_RSC_ALREADY_DISKLESS: u32 = 1008;
/// The node was evicted.
pub const WARN_NODE_EVICTED: u32 = 1017;
/// Sign-in failed.
pub const FAIL_SIGN_IN: u32 = 10000;
/// Credentials are required but none were sent.
pub const FAIL_SIGN_IN_MISSING_CREDENTIALS: u32 = 10001;

/// A LINSTOR return code: a Java signed long carrying type, operation, object and code bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RetCode(pub i64);

impl RetCode {
    /// An error code with operation and object bits.
    pub const fn error(code: u32, op_obj: i64) -> RetCode {
        RetCode(MASK_ERROR | op_obj | code as i64)
    }

    /// A warning code with operation and object bits.
    pub const fn warn(code: u32, op_obj: i64) -> RetCode {
        RetCode(MASK_WARN | op_obj | code as i64)
    }

    /// An informational code with operation and object bits.
    pub const fn info(code: u32, op_obj: i64) -> RetCode {
        RetCode(MASK_INFO | op_obj | code as i64)
    }

    /// A success code with operation and object bits.
    pub const fn success(code: u32, op_obj: i64) -> RetCode {
        RetCode(op_obj | code as i64)
    }

    /// Both type bits are set.
    pub const fn is_error(self) -> bool {
        self.0 & MASK_BITS_TYPE == MASK_ERROR
    }

    /// Only the warning bit is set.
    pub const fn is_warn(self) -> bool {
        self.0 & MASK_BITS_TYPE == MASK_WARN
    }

    /// Only the info bit is set.
    pub const fn is_info(self) -> bool {
        self.0 & MASK_BITS_TYPE == MASK_INFO
    }

    /// Neither type bit is set.
    pub const fn is_success(self) -> bool {
        self.0 & MASK_BITS_TYPE == 0
    }

    /// The code bits, e.g. 501 for FAIL_EXISTS_RSC_DFN.
    pub const fn code(self) -> u32 {
        (self.0 & MASK_BITS_CODE) as u32
    }

    /// The object bits, e.g. [`MASK_RSC_DFN`].
    pub const fn object(self) -> i64 {
        self.0 & MASK_BITS_OBJ
    }

    /// The operation bits, e.g. [`MASK_CRT`].
    pub const fn operation(self) -> i64 {
        self.0 & MASK_BITS_OP
    }
}

impl fmt::Display for RetCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.is_error() {
            "error"
        } else if self.is_warn() {
            "warning"
        } else if self.is_info() {
            "info"
        } else {
            "success"
        };
        write!(f, "{kind} {}", self.code())
    }
}

/// One entry of an `ApiCallRc` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiCallRc {
    /// The signed return code.
    pub ret_code: RetCode,
    /// What happened, in LINSTOR's words.
    #[serde(default)]
    pub message: String,
    /// Why it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// More detail; for FAIL_NOT_ENOUGH_NODES the placement criteria that could not be met.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// What the operator could do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction: Option<String>,
    /// Error reports written by the controller for this entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_report_ids: Vec<String>,
    /// Objects the entry refers to (`RscDfn`, `Node`, ...).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub obj_refs: std::collections::BTreeMap<String, String>,
    /// Fields this client does not know, kept as sent.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ApiCallRc {
    /// An entry with a code and a message and nothing else.
    pub fn new(ret_code: RetCode, message: impl Into<String>) -> ApiCallRc {
        ApiCallRc {
            ret_code,
            message: message.into(),
            cause: None,
            details: None,
            correction: None,
            error_report_ids: Vec::new(),
            obj_refs: Default::default(),
            extra: Default::default(),
        }
    }

    /// The same entry with `details` set.
    pub fn with_details(mut self, details: impl Into<String>) -> ApiCallRc {
        self.details = Some(details.into());
        self
    }

    /// The same entry with `cause` set.
    pub fn with_cause(mut self, cause: impl Into<String>) -> ApiCallRc {
        self.cause = Some(cause.into());
        self
    }

    /// Message, cause and details in one line of text, as an operator would want to read them.
    pub fn text(&self) -> String {
        let mut text = self.message.clone();
        if let Some(cause) = self.cause.as_deref().filter(|c| !c.is_empty()) {
            text.push_str("; cause: ");
            text.push_str(cause);
        }
        if let Some(details) = self.details.as_deref().filter(|d| !d.is_empty()) {
            text.push_str("; details: ");
            text.push_str(details);
        }
        text
    }
}

/// The list of entries a mutating call returns. Deserializes from an array or from a single object,
/// because the controller sends arrays even where its spec declares one object.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct ApiCallRcList(pub Vec<ApiCallRc>);

impl<'de> Deserialize<'de> for ApiCallRcList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            Many(Vec<ApiCallRc>),
            One(Box<ApiCallRc>),
        }
        Ok(match OneOrMany::deserialize(deserializer)? {
            OneOrMany::Many(list) => ApiCallRcList(list),
            OneOrMany::One(one) => ApiCallRcList(vec![*one]),
        })
    }
}

impl ApiCallRcList {
    /// The first error entry, if any.
    pub fn first_error(&self) -> Option<&ApiCallRc> {
        self.0.iter().find(|rc| rc.ret_code.is_error())
    }

    /// True when no entry is an error.
    pub fn is_ok(&self) -> bool {
        self.first_error().is_none()
    }

    /// True when some entry carries `code` (any type).
    pub fn has_code(&self, code: u32) -> bool {
        self.0.iter().any(|rc| rc.ret_code.code() == code)
    }

    /// The entries.
    pub fn entries(&self) -> &[ApiCallRc] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_codes_from_the_controller_decode_as_documented() {
        let rd_exists = RetCode(-4611686018406940171);
        assert!(rd_exists.is_error());
        assert_eq!(rd_exists.code(), FAIL_EXISTS_RSC_DFN);
        assert_eq!(rd_exists.object(), MASK_RSC_DFN);
        assert_eq!(rd_exists.operation(), MASK_CRT);
        assert_eq!(
            RetCode::error(FAIL_EXISTS_RSC_DFN, MASK_CRT | MASK_RSC_DFN),
            rd_exists
        );
        assert_eq!(
            RetCode::error(FAIL_NOT_ENOUGH_NODES, 0).0,
            -4611686018427386908
        );
        assert_eq!(
            RetCode::error(FAIL_NOT_FOUND_RSC_DFN, 0).0,
            -4611686018427387603
        );
        let created = RetCode(20185089);
        assert!(created.is_success() && !created.is_error() && !created.is_warn());
        assert_eq!(created, RetCode::success(CREATED, MASK_CRT | MASK_RSC));
        let warn = RetCode::warn(WARN_RSC_ALREADY_DEPLOYED, 0);
        assert!(warn.is_warn() && !warn.is_error() && !warn.is_info());
        assert!(RetCode::info(10003, 0).is_info());
    }

    #[test]
    fn reply_lists_parse_from_an_array_or_a_single_object_and_keep_unknown_fields() {
        let many: ApiCallRcList = serde_json::from_str(
            r#"[{"ret_code":20185089,"message":"ok","future_field":7},{"ret_code":-4611686018427386908,"message":"Not enough available nodes","details":"criteria"}]"#,
        )
        .unwrap();
        assert_eq!(many.0.len(), 2);
        assert_eq!(many.0[0].extra["future_field"], 7);
        assert_eq!(
            many.first_error().unwrap().details.as_deref(),
            Some("criteria")
        );
        let one: ApiCallRcList =
            serde_json::from_str(r#"{"ret_code":-4611686018427387603,"message":"gone"}"#).unwrap();
        assert_eq!(one.0.len(), 1);
        assert_eq!(
            one.first_error().unwrap().ret_code.code(),
            FAIL_NOT_FOUND_RSC_DFN
        );
    }
}
