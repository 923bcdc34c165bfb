#![allow(clippy::unwrap_used)]

use crmhooks_payload::ContactEvent;

#[test]
fn names_parse_and_display() {
    let names: Vec<_> = ContactEvent::ALL.iter().map(|e| e.as_str()).collect();
    assert_eq!(
        names,
        [
            "contact.created",
            "contact.changed",
            "contact.softdeleted",
            "contact.deleted"
        ]
    );
    for e in ContactEvent::ALL {
        assert_eq!(e.to_string().parse::<ContactEvent>().unwrap(), e);
    }
    assert!("contact.SoftDeleted".parse::<ContactEvent>().is_err());
    assert!("person.created".parse::<ContactEvent>().is_err());
}
