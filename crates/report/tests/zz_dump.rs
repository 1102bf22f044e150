mod common;
#[test]
fn dump() {
    let r = common::rich_report();
    std::fs::write("/tmp/rep.xml", testbed_report::to_junit(&r).unwrap()).unwrap();
    std::fs::write("/tmp/rep.tap", testbed_report::to_tap(&r)).unwrap();
    std::fs::write("/tmp/rep1.tap", testbed_report::to_tap(&common::single_suite())).unwrap();
    std::fs::write("/tmp/rep.html", testbed_report::to_html(&r)).unwrap();
    std::fs::write("/tmp/rep.json", testbed_report::to_json(&r)).unwrap();
    std::fs::write("/tmp/rep.txt", testbed_report::to_summary(&r)).unwrap();
}
