"""ChatOps rollbacks: preview (pure diff + server-side dry run), approval, execution, verification."""
