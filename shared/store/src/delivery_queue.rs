//! The queue of deliveries to attempt (issue 23 §3): one SQS message per (event, endpoint), so a
//! slow endpoint holds up only its own messages. The message names the delivery
//! ([`DeliveryKey`]); the delivery item, not the message, says whether it is still to be done, so
//! a message received twice is harmless.

use crate::partner_webhooks::DeliveryKey;
use crate::queue::{Message, Queue};

/// A delivery's message: the delivery item, not the message, says whether it is still to be
/// done, so a message received (or sent) twice is harmless.
impl Message for DeliveryKey {}

/// The deliveries queue's client.
pub type DeliveryQueue = Queue<DeliveryKey>;
