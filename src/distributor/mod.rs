//! The distributor: variant queue, one worker per live target, requeue, ledger, handlers.
