"""Long-running work driven by Step Functions (group deletion now; flows later)."""
