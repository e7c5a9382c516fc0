use super::*;

#[test]
fn openai_shape() {
    let d = Denial::invalid_credentials();
    let v: serde_json::Value = serde_json::from_str(&d.body()).unwrap();
    assert_eq!(v["error"]["type"], "authentication_error");
    assert_eq!(v["error"]["code"], "invalid_credentials");
    assert!(v["error"]["message"].is_string());
    assert!(v["error"]["param"].is_null());
    assert_eq!(d.status, 401);
}

#[test]
fn message_is_escaped() {
    let b = error_body("a \"quoted\" \n msg", "t", "c");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["error"]["message"], "a \"quoted\" \n msg");
}
