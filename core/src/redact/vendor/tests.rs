use super::*;

type Finder = fn(&[u8], &mut Vec<Span<'_>>);

fn found(f: Finder, text: &str) -> Vec<(&str, &str)> {
    let mut spans = Vec::new();
    f(text.as_bytes(), &mut spans);
    spans
        .iter()
        .map(|s| (&text[s.start..s.end], s.tag))
        .collect()
}

fn tokens(text: &str) -> Vec<(&str, &str)> {
    found(find_prefixed_tokens, text)
}

const GH36: &str = "aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5z0";

#[test]
fn github_tokens() {
    for prefix in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
        let token = format!("{prefix}{}", &GH36[..36]);
        let text = format!("export GH_TOKEN={token}; echo");
        assert_eq!(tokens(&text), vec![(token.as_str(), TAG_GITHUB)], "{text}");
        let quoted = format!("\"{token}\"");
        assert_eq!(tokens(&quoted), vec![(token.as_str(), TAG_GITHUB)]);
    }
    let pat = format!("github_pat_11ABCDEFG0{}_{}", &GH36[..12], "x".repeat(59));
    assert_eq!(
        tokens(&format!("pat: {pat}.")),
        vec![(pat.as_str(), TAG_GITHUB)]
    );
}

#[test]
fn github_near_misses() {
    for text in [
        "ghp_ is the prefix of a personal token",
        "ghp_short123",
        "the ghs_file_name variable",
        &format!("xghp_{GH36}"),
        &format!("my_ghp_{GH36}"),
        "github_pat_ prefix, github_pat_abc",
        // A git SHA-1 is not a GitHub token.
        "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
    ] {
        assert!(tokens(text).is_empty(), "{text:?}");
    }
}

#[test]
fn slack_tokens_and_webhooks() {
    for token in [
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "xoxp-123456789012-123456789012-123456789012-0123456789abcdef0123456789abcdef",
        "xoxa-2-123456789012-abcdefABCDEF",
        "xoxr-123456789012-abcdefABCDEF",
        "xoxs-123456789012-abcdefABCDEF",
        "xapp-1-A0123456789-1234567890123-0123456789abcdef",
    ] {
        let text = format!("SLACK={token} ok");
        assert_eq!(tokens(&text), vec![(token, TAG_SLACK)], "{text}");
    }
    for text in [
        "xoxb- is a bot token",
        "xoxb-123",
        "fooxoxb-1234567890123",
        "xapp-short",
    ] {
        assert!(tokens(text).is_empty(), "{text:?}");
    }

    let hook = "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX";
    assert_eq!(
        found(find_slack_webhooks, &format!("post to {hook}, then")),
        vec![(hook, TAG_SLACK_WEBHOOK)]
    );
    let bare = "hooks.slack.com/workflows/T0123/A0123/456/abcdef";
    assert_eq!(
        found(find_slack_webhooks, bare),
        vec![(bare, TAG_SLACK_WEBHOOK)]
    );
    for text in [
        "see https://hooks.slack.com/ for docs",
        "https://hooks.slack.com/services/",
        "https://hooks.slack.com/apps/T0000000/B0000000/XXXX",
        "https://api.slack.com/services/T00000000/B00000000/XXXXXXXX",
    ] {
        assert!(found(find_slack_webhooks, text).is_empty(), "{text:?}");
    }
}

#[test]
fn google_keys_and_oauth_tokens() {
    let key = "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY";
    assert_eq!(key.len(), 39);
    assert_eq!(
        tokens(&format!("key={key}&q=1")),
        vec![(key, TAG_GOOGLE_KEY)]
    );
    let oauth = "ya29.a0AfH6SMBx3Yq_example-Token.Part_0123456789";
    assert_eq!(
        tokens(&format!("Authorization: {oauth}")),
        vec![(oauth, TAG_GOOGLE_OAUTH)]
    );
    for text in [
        "AIza is how Google keys start",
        "AIzaSyShort-123",
        "maya29.5 is a number",
        "ya29.short",
        "xAIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
    ] {
        assert!(tokens(text).is_empty(), "{text:?}");
    }
}

#[test]
fn stripe_keys() {
    for key in [
        "sk_live_51H8abcDEFghiJKLmnoPQRstu",
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
        "rk_live_51H8abcDEFghiJKLmnoPQRstu",
        "pk_live_51H8abcDEFghiJKLmnoPQRstu",
        "pk_test_TYooMQauvdEDq54NiTphI7jx",
        "whsec_0123456789abcdefABCDEF0123456789",
    ] {
        assert_eq!(
            tokens(&format!("stripe {key}.")),
            vec![(key, TAG_STRIPE)],
            "{key}"
        );
    }
    for text in [
        "sk_live_ keys are secret",
        "sk_live_mode = true",
        "task_live_0123456789abcdefghij",
        "desk_test_0123456789abcdefghij",
    ] {
        assert!(tokens(text).is_empty(), "{text:?}");
    }
}

#[test]
fn hugging_face_tokens() {
    let token = "hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh";
    assert_eq!(tokens(&format!("HF_TOKEN={token}")), vec![(token, TAG_HF)]);
    for text in [
        "hf_hub_download(repo_id)",
        "self.hf_model_name",
        "hf_token",
        "chf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh",
    ] {
        assert!(tokens(text).is_empty(), "{text:?}");
    }
}

const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

#[test]
fn aws_secret_access_keys_need_context() {
    for text in [
        format!("aws_secret_access_key = {AWS_SECRET}"),
        format!("AWS_SECRET_ACCESS_KEY={AWS_SECRET}"),
        format!("\"SecretAccessKey\": \"{AWS_SECRET}\""),
        format!("AWS Secret Access Key [None]: {AWS_SECRET}"),
    ] {
        assert_eq!(
            found(find_aws_secrets, &text),
            vec![(AWS_SECRET, TAG_AWS_SECRET)],
            "{text}"
        );
    }
}

#[test]
fn aws_secret_near_misses() {
    let far = format!("aws {} {AWS_SECRET}", "x".repeat(70));
    for text in [
        // No context.
        format!("value {AWS_SECRET}"),
        far,
        // A git SHA-1 next to "aws": hex only, one case.
        "aws commit 9fceb02d0ae598e95dc970b74767f19372d61af8".to_owned(),
        "AWS COMMIT 9FCEB02D0AE598E95DC970B74767F19372D61AF8".to_owned(),
        // 39 and 41 characters, and part of a longer base64 blob.
        format!("aws secret {}", &AWS_SECRET[..39]),
        format!("aws secret {AWS_SECRET}Q"),
        format!("aws secret {AWS_SECRET}=="),
        format!("aws secret my_{AWS_SECRET}"),
        // Letters only: a long identifier.
        "aws secret ThisIsAVeryLongCamelCaseIdentifierNameXY".to_owned(),
    ] {
        assert!(found(find_aws_secrets, &text).is_empty(), "{text:?}");
    }
}
