// Placeholder: filled by the Apache integration tests.
