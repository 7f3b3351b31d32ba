//! hookstream operator.
