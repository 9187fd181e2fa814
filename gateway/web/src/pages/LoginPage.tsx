import { useState } from "react";
import { Link, Navigate, useLocation, useNavigate } from "react-router-dom";
import { ApiError, messageOf } from "@/api/problem";
import { Button } from "@/components/ui/button";
import { FieldError, Hint, Input, Label } from "@/components/ui/field";
import { Alert, Card } from "@/components/ui/misc";
import { useAuth } from "@/stores/auth";

// /login and /register render this page at the same place in the tree, so React would keep one
// instance, and an error shown on one would follow the user to the other: a key per mode gives
// each its own state.
export default function LoginPage({ register = false }: { register?: boolean }) {
  return <AccountForm key={register ? "register" : "login"} register={register} />;
}

function AccountForm({ register }: { register: boolean }) {
  const session = useAuth((state) => state.session);
  const notice = useAuth((state) => state.notice);
  const signIn = useAuth((state) => state.signIn);
  const signUp = useAuth((state) => state.register);
  const navigate = useNavigate();
  const location = useLocation();
  const from = (location.state as { from?: string } | null)?.from ?? "/";
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [fieldErrors, setFieldErrors] = useState<Record<string, string>>({});

  if (session) return <Navigate to={from} replace />;

  const submit = async (event: { preventDefault: () => void }) => {
    event.preventDefault();
    const errors: Record<string, string> = {};
    if (!email.includes("@")) errors.email = "Enter an email address";
    if (register && password.length < 10) errors.password = "At least 10 characters";
    if (!password) errors.password = "Enter your password";
    setFieldErrors(errors);
    if (Object.keys(errors).length) return;
    setBusy(true);
    setError(null);
    try {
      await (register ? signUp(email, password) : signIn(email, password));
      void navigate(from, { replace: true });
    } catch (err) {
      setError(messageOf(err));
      if (err instanceof ApiError) setFieldErrors(err.fieldErrors);
    } finally {
      setBusy(false);
    }
  };

  const title = register ? "Create your account" : "Sign in";
  return (
    <div className="mx-auto max-w-md">
      <Card className="p-6">
        <h1 className="mb-1 text-2xl font-semibold">{title}</h1>
        <p className="mb-6 text-sm text-slate-700 dark:text-slate-300">Upload images and run fal.ai workflows on them.</p>
        {notice && !error && (
          <Alert tone="info" className="mb-4">
            {notice}
          </Alert>
        )}
        <form onSubmit={(event) => void submit(event)} noValidate className="grid gap-4">
          <div className="grid gap-1.5">
            <Label htmlFor="email">Email</Label>
            <Input
              id="email"
              type="email"
              autoComplete="email"
              required
              value={email}
              onChange={(event) => setEmail(event.target.value)}
              aria-invalid={fieldErrors.email ? true : undefined}
              aria-describedby={fieldErrors.email ? "email-error" : undefined}
            />
            <FieldError id="email-error">{fieldErrors.email}</FieldError>
          </div>
          <div className="grid gap-1.5">
            <Label htmlFor="password">Password</Label>
            <Input
              id="password"
              type="password"
              autoComplete={register ? "new-password" : "current-password"}
              required
              value={password}
              onChange={(event) => setPassword(event.target.value)}
              aria-invalid={fieldErrors.password ? true : undefined}
              aria-describedby={[register ? "password-hint" : "", fieldErrors.password ? "password-error" : ""].join(" ").trim() || undefined}
            />
            {register && <Hint id="password-hint">At least 10 characters, not your email address.</Hint>}
            <FieldError id="password-error">{fieldErrors.password}</FieldError>
          </div>
          {error && <Alert>{error}</Alert>}
          <Button type="submit" disabled={busy}>
            {busy ? "Please wait…" : register ? "Create account" : "Sign in"}
          </Button>
        </form>
        <p className="mt-4 text-sm text-slate-700 dark:text-slate-300">
          {register ? "Already have an account? " : "New to Atelier? "}
          <Link className="font-medium text-brand-700 underline dark:text-brand-100" to={register ? "/login" : "/register"} state={location.state as unknown}>
            {register ? "Sign in" : "Create an account"}
          </Link>
        </p>
      </Card>
      <p className="mt-4 text-center text-sm">
        <a className="text-brand-700 underline dark:text-brand-100" href="/api/docs/">
          REST API documentation
        </a>
      </p>
    </div>
  );
}
