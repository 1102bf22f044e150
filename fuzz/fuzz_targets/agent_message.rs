//! Agent protocol messages (JSON over the WebSocket), both directions:
//! whatever parses must serialize and parse back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use testbed_core::protocol::{AgentMessage, ServerMessage};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = serde_json::from_slice::<AgentMessage>(data) {
        let again = serde_json::to_vec(&m).expect("an agent message serializes");
        let back =
            serde_json::from_slice::<AgentMessage>(&again).expect("an agent message parses back");
        assert_eq!(m, back, "an agent message round-trips");
    }
    if let Ok(m) = serde_json::from_slice::<ServerMessage>(data) {
        let again = serde_json::to_vec(&m).expect("a server message serializes");
        let back =
            serde_json::from_slice::<ServerMessage>(&again).expect("a server message parses back");
        assert_eq!(m, back, "a server message round-trips");
    }
});
